"""Anthropic Messages answers → OpenAI chat completions: the message, its usage, stop reasons, errors. Pure.

    Message content text blocks       →  choices[0].message.content (joined; null when there are none)
    Message content tool_use blocks   →  choices[0].message.tool_calls (arguments: `input` as a JSON string)
    stop_reason                       →  finish_reason (FINISH_REASONS)
    usage                             →  prompt_tokens = input + cache creation + cache read tokens,
                                         prompt_tokens_details.cached_tokens = cache read tokens,
                                         completion_tokens = output tokens
    {"type": "error", "error": {type, message}}
                                      →  {"error": {message, type, param: null, code: Anthropic's type}}

An error's `type` is OpenAI's "server_error" for Anthropic's api_error and overloaded_error and
"invalid_request_error" otherwise; the HTTP status is kept as it is (a 529 stays a 529, which the SDKs raise
as an InternalServerError). "prompt is too long" gets the code `context_length_exceeded`, as OpenAI names it,
so `context_window_fallbacks` apply to Anthropic models too. A body that is not Anthropic's error JSON (a
proxy's HTML page, say) becomes the message of an OpenAI error. Thinking blocks are not passed on.
"""

from collections.abc import Mapping
from typing import Any

from gateway import codec

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
SERVER_ERRORS = frozenset({"api_error", "overloaded_error", "timeout_error"})
CONTEXT_TOO_LONG = "prompt is too long"
MAX_QUOTED_BODY = 500


def chat_completion(message: Mapping[str, Any], created: int) -> dict[str, Any]:
    """The OpenAI `chat.completion` for an Anthropic Message."""
    blocks = [block for block in message.get("content") or () if isinstance(block, dict)]
    texts = [block["text"] for block in blocks if block.get("type") == "text"]
    calls = [tool_call(block) for block in blocks if block.get("type") == "tool_use"]
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None, "refusal": None}
    if calls:
        reply["tool_calls"] = calls
    choice = {"index": 0, "message": reply, "logprobs": None, "finish_reason": finish_reason(message["stop_reason"])}
    return {
        "id": message["id"],
        "object": "chat.completion",
        "created": created,
        "model": message["model"],
        "choices": [choice],
        "usage": usage(message.get("usage") or {}),
    }


def tool_call(block: Mapping[str, Any]) -> dict[str, Any]:
    arguments = codec.dumps(block.get("input") or {}).decode()
    return {"id": block["id"], "type": "function", "function": {"name": block["name"], "arguments": arguments}}


def finish_reason(stop_reason: str | None) -> str:
    return FINISH_REASONS.get(stop_reason or "", "stop")


def usage(counts: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI usage from Anthropic's: cached and cache-writing input tokens are prompt tokens too."""
    cache_read = counts.get("cache_read_input_tokens") or 0
    prompt = (counts.get("input_tokens") or 0) + (counts.get("cache_creation_input_tokens") or 0) + cache_read
    completion = counts.get("output_tokens") or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cache_read},
    }


def answer_body(status: int, body: bytes, created: int) -> bytes:
    """What the client gets for Anthropic's answer `body` with HTTP `status`."""
    if status >= 400:
        return error_body(status, body)
    try:
        return codec.dumps(chat_completion(codec.loads(body), created))
    except (codec.JSONDecodeError, KeyError, TypeError, AttributeError):
        return openai_error("The model server's answer was not an Anthropic message.", "server_error", None)


def error_body(status: int, body: bytes) -> bytes:
    """An Anthropic error response as OpenAI's error JSON."""
    try:
        error = codec.loads(body)["error"]
        kind, message = error["type"], error["message"]
    except (codec.JSONDecodeError, KeyError, TypeError):
        kind = message = None
    if isinstance(kind, str) and isinstance(message, str):
        return openai_error(message, error_type(kind), error_code(kind, message))
    text = body.decode("utf-8", "replace").strip()[:MAX_QUOTED_BODY]
    message = f"The model server answered {status}: {text}" if text else f"The model server answered {status}."
    return openai_error(message, "server_error" if status >= 500 else "invalid_request_error", None)


def error_type(kind: str) -> str:
    return "server_error" if kind in SERVER_ERRORS else "invalid_request_error"


def error_code(kind: str, message: str) -> str:
    if kind == "invalid_request_error" and message.lower().startswith(CONTEXT_TOO_LONG):
        return "context_length_exceeded"
    return kind


def openai_error(message: str, kind: str, code: str | None) -> bytes:
    return codec.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}})
