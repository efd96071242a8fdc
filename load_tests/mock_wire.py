"""OpenAI wire bodies for the mock upstream: pure functions from a parsed request to response bytes.

Nothing here does I/O. Every function takes the parsed request body (a dict) plus the few values the
server decides (id, timestamp, reply text) and returns the exact JSON or SSE bytes the official
`openai` SDK parses: `chat.completion` / `chat.completion.chunk`, `text_completion`, embeddings
(float or base64 little-endian float32), and the Responses API object and its stream events.

Token counts are deterministic and simple: one token per whitespace-separated word. A text answer
longer than the request's length cap (`answer_cap`) is cut to its first `cap` words (`cut`).
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
from collections.abc import Iterator
from typing import Any

import orjson

_PIECE = re.compile(r"\s*\S+|\s+$")
_JSON_FORMATS = frozenset({"json_object", "json_schema"})
SSE_DONE = b"data: [DONE]\n\n"


# ---------------------------------------------------------------- request helpers


def words(text: str) -> int:
    """The mock's token count: whitespace-separated words."""
    return len(text.split())


def pieces(text: str) -> list[str]:
    """Split `text` into word-sized stream deltas whose concatenation is exactly `text`."""
    return _PIECE.findall(text) or [text]


def answer_cap(body: dict, *fields: str) -> int | None:
    """The answer length cap a request sets: the first of `fields` holding a positive integer, else None."""
    for name in fields:
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def cut(text: str, cap: int | None) -> tuple[str, bool]:
    """`text` cut to its first `cap` words, their spacing kept; True if anything was cut off."""
    if cap is None or words(text) <= cap:
        return text, False
    return "".join(pieces(text)[:cap]), True


def content_text(content: Any) -> str:
    """Text of a message `content`: a string, or a list of content parts (text parts joined)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def last_user_text(items: Any) -> str:
    """Text of the last `role: user` item of a chat `messages` list or a Responses `input` list."""
    if isinstance(items, str):
        return items
    if not isinstance(items, list):
        return ""
    for item in reversed(items):
        if isinstance(item, dict) and item.get("role") == "user":
            return content_text(item.get("content"))
    return ""


def prompt_words(items: Any) -> int:
    """Token count of every message (or Responses input item) in a request."""
    if isinstance(items, str):
        return words(items)
    if not isinstance(items, list):
        return 0
    return sum(words(content_text(m.get("content"))) for m in items if isinstance(m, dict))


def echo_json(user_text: str) -> str:
    """The JSON-mode answer and tool-call arguments: `{"echo": "<last user text>"}`."""
    return orjson.dumps({"echo": user_text}).decode()


def wants_json(body: dict) -> bool:
    """True if a chat request asks for `response_format` json_object or json_schema."""
    fmt = body.get("response_format")
    return isinstance(fmt, dict) and fmt.get("type") in _JSON_FORMATS


def chosen_tool(body: dict) -> str | None:
    """Name of the function tool the mock should call, or None to answer with text."""
    tools, choice = body.get("tools"), body.get("tool_choice")
    if not tools or choice == "none" or not isinstance(tools, list):
        return None
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return choice["function"].get("name")
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and function.get("name"):
            return function["name"]
    return None


def error_body(status: int, message: str, code: str | None = None, param: str | None = None) -> bytes:
    """An OpenAI error JSON body with a `type` fitting the status."""
    if status == 429:
        kind = "requests"
        code = code or "rate_limit_exceeded"
    elif status >= 500:
        kind = "server_error"
    else:
        kind = "invalid_request_error"
    return orjson.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}})


def sse(payload: dict) -> bytes:
    """One `data:` server-sent event."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def sse_event(payload: dict) -> bytes:
    """One named server-sent event (`event:` + `data:`), as the Responses API streams them."""
    return b"event: " + payload["type"].encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


# ---------------------------------------------------------------- chat completions


def chat_usage(prompt: int, completion: int) -> dict:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }


def chat_message(content: str | None, tool: str | None, call_id: str, arguments: str) -> dict:
    """The assistant message: text content, or one tool call when `tool` is set."""
    message: dict = {"role": "assistant", "content": content, "refusal": None, "annotations": []}
    if tool is not None:
        message["tool_calls"] = [
            {"id": call_id, "type": "function", "function": {"name": tool, "arguments": arguments}}
        ]
    return message


def chat_completion(head: dict, message: dict, finish: str, usage: dict) -> bytes:
    """A complete `chat.completion` body; `head` holds id, created and model."""
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
    body = {"object": "chat.completion", **head, "choices": [choice], "usage": usage}
    body["system_fingerprint"] = None
    return orjson.dumps(body)


def chat_chunks(head: dict, deltas: list[dict], finish: str, usage: dict | None) -> Iterator[bytes]:
    """`chat.completion.chunk` SSE events: the deltas, a finish chunk, the usage chunk if asked, [DONE]."""
    base = {"object": "chat.completion.chunk", **head, "system_fingerprint": None}
    extra = {"usage": None} if usage is not None else {}
    for delta in deltas:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
        yield sse({**base, "choices": [choice], **extra})
    choice = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish}
    yield sse({**base, "choices": [choice], **extra})
    if usage is not None:
        yield sse({**base, "choices": [], "usage": usage})
    yield SSE_DONE


def text_deltas(text: str) -> list[dict]:
    """Chat deltas for a text answer: the first carries the role."""
    deltas: list[dict] = [{"content": p} for p in pieces(text)]
    deltas[0] = {"role": "assistant", **deltas[0]}
    return deltas


def tool_deltas(tool: str, call_id: str, arguments: str) -> list[dict]:
    """Chat deltas for a tool call: name and id first, then the arguments in pieces."""
    first = {"index": 0, "id": call_id, "type": "function", "function": {"name": tool, "arguments": ""}}
    deltas: list[dict] = [{"role": "assistant", "content": None, "tool_calls": [first]}]
    for piece in pieces(arguments):
        deltas.append({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
    return deltas


# ---------------------------------------------------------------- legacy completions


def first_prompt(prompt: Any) -> str:
    """Text of a completions `prompt`: a string, the first of a list, or a token array rendered."""
    if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
        prompt = prompt[0]
    if isinstance(prompt, list):
        return " ".join(str(t) for t in prompt)
    return prompt if isinstance(prompt, str) else ""


def completion(head: dict, text: str, finish: str, usage: dict) -> bytes:
    choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}
    return orjson.dumps({"object": "text_completion", **head, "choices": [choice], "usage": usage})


def completion_chunks(head: dict, text: str, finish: str, usage: dict | None) -> Iterator[bytes]:
    """`text_completion` SSE events: one per word, the last carrying finish_reason; usage; [DONE]."""
    base = {"object": "text_completion", **head}
    parts = pieces(text)
    for i, part in enumerate(parts):
        done = finish if i == len(parts) - 1 else None
        yield sse({**base, "choices": [{"text": part, "index": 0, "logprobs": None, "finish_reason": done}]})
    if usage is not None:
        yield sse({**base, "choices": [], "usage": usage})
    yield SSE_DONE


# ---------------------------------------------------------------- embeddings


def embedding_inputs(value: Any) -> list[Any]:
    """Normalise `input` to a list of items: strings or token arrays."""
    if isinstance(value, str) or (isinstance(value, list) and value and isinstance(value[0], int)):
        return [value]
    return value if isinstance(value, list) else []


def vector(item: Any, dimensions: int) -> list[float]:
    """A deterministic unit vector of float32 values derived from a hash of `item`."""
    data = item.encode() if isinstance(item, str) else orjson.dumps(item)
    raw = struct.unpack(f"<{dimensions}H", hashlib.shake_128(data).digest(2 * dimensions))
    values = [u / 32767.5 - 1.0 for u in raw]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    packed = struct.pack(f"<{dimensions}f", *(v / norm for v in values))
    return list(struct.unpack(f"<{dimensions}f", packed))


def embeddings(model: str, items: list[Any], dimensions: int, as_base64: bool) -> bytes:
    """A `list` of `embedding` objects; base64 is the little-endian float32 array, as the SDK expects."""
    data, tokens = [], 0
    for index, item in enumerate(items):
        values = vector(item, dimensions)
        encoded: Any = values
        if as_base64:
            encoded = base64.b64encode(struct.pack(f"<{dimensions}f", *values)).decode()
        data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens += words(item) if isinstance(item, str) else len(item)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return orjson.dumps({"object": "list", "data": data, "model": model, "usage": usage})


# ---------------------------------------------------------------- responses API


def responses_usage(prompt: int, completion: int) -> dict:
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def output_message(msg_id: str, text: str, status: str = "completed") -> dict:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}] if text else []
    return {"type": "message", "id": msg_id, "status": status, "role": "assistant", "content": content}


def response_object(body: dict, head: dict, output: list, usage: dict | None, status: str) -> dict:
    """A `response` object with every field the SDK's `Response` model requires."""
    text_format = body.get("text") if isinstance(body.get("text"), dict) else {"format": {"type": "text"}}
    return {
        **head,
        "object": "response",
        "status": status,
        "completed_at": head["created_at"] if status == "completed" else None,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "metadata": body.get("metadata") or {},
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": text_format,
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation") or "disabled",
        "usage": usage,
        "user": body.get("user"),
    }


def response_events(
    body: dict, head: dict, msg_id: str, text: str, usage: dict, status: str = "completed"
) -> Iterator[bytes]:
    """The Responses SSE event sequence for one text message, each with `type` and `sequence_number`.

    `status` is "completed", or "incomplete" (the answer was cut at `max_output_tokens`): then the item is
    incomplete too and the last event is `response.incomplete`.
    """
    where = {"item_id": msg_id, "output_index": 0, "content_index": 0}
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    pending = response_object(body, head, [], None, "in_progress")
    events: list[dict] = [
        {"type": "response.created", "response": pending},
        {"type": "response.in_progress", "response": pending},
        {"type": "response.output_item.added", "output_index": 0, "item": output_message(msg_id, "", "in_progress")},
        {"type": "response.content_part.added", **where, "part": {**part, "text": ""}},
    ]
    events += [{"type": "response.output_text.delta", **where, "delta": p, "logprobs": []} for p in pieces(text)]
    item = output_message(msg_id, text, status)
    done = response_object(body, head, [item], usage, status)
    events += [
        {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **where, "part": part},
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": f"response.{status}", "response": done},
    ]
    for number, event in enumerate(events):
        event["sequence_number"] = number
        yield sse_event(event)
