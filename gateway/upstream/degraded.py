"""Graceful degradation: the answer a model's `default_response` gives when every deployment and fallback failed.

It is a well-formed OpenAI chat completion (or a one-chunk stream), marked `x-gateway-degraded: default_response`
so clients and dashboards can tell it from a model's answer.
"""

import time
import uuid
from collections.abc import AsyncIterator

from gateway import codec
from gateway.pipeline import Result
from gateway.settings import DefaultResponse, ModelConfig

USAGE = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


def answer(model: ModelConfig, default: DefaultResponse, stream: bool, attempts: int) -> Result:
    headers = {"x-gateway-degraded": "default_response", "x-gateway-attempts": str(attempts)}
    ident, created = f"chatcmpl-degraded-{uuid.uuid4().hex}", int(time.time())
    if stream:
        headers["content-type"] = "text/event-stream; charset=utf-8"
        return Result(200, headers, _stream(model.name, default.content, ident, created))
    headers["content-type"] = "application/json"
    message = {"role": "assistant", "content": default.content, "refusal": None}
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
    body = {"id": ident, "object": "chat.completion", "created": created, "model": model.name,
            "choices": [choice], "usage": USAGE}  # fmt: skip
    return Result(200, headers, codec.dumps(body))


async def _stream(model: str, content: str, ident: str, created: int) -> AsyncIterator[bytes]:
    head = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model}
    deltas = [({"role": "assistant", "content": content}, None), ({}, "stop")]
    for delta, finish in deltas:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        yield b"data: " + codec.dumps({**head, "choices": [choice]}) + b"\n\n"
    yield b"data: [DONE]\n\n"
