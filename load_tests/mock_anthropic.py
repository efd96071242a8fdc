"""A mock Anthropic Messages API server: a raw ASGI app answering `POST /v1/messages` like Anthropic does.

The answer is a text block `"Echo: " + <last user text>`. With `tools` and a `tool_choice` other than none,
it is a `tool_use` block instead, calling the first tool (or the one `tool_choice` names) with
`{"echo": <last user text>}` and stop_reason `tool_use`; a turn that carries tool results is answered with
text, so a tool loop ends. `stream: true` gives Anthropic's event sequence (message_start,
content_block_start, ping, content_block_delta…, content_block_stop, message_delta, message_stop).

Like Anthropic it wants `x-api-key` (when started with `--api-key`: a wrong one is a 401), an
`anthropic-version` header, `model`, `max_tokens` and `messages` (a 400 without), and answers errors as
`{"type": "error", "error": {type, message}, "request_id"}`. A model whose name starts with `fail529` is
overloaded: a 529 `overloaded_error`. Token counts are words, as in the OpenAI-wire mock.

    POST /v1/messages
    GET|DELETE /_mock/requests    the last requests: method, path, headers, body (as mock_upstream records them)
    DELETE /_mock/faults, /_mock/stats   accepted, so tests.servers.Mock can reset this mock too
    GET /health

Run: `python -m load_tests.mock_anthropic --port 9100 [--api-key K]`.
"""

from __future__ import annotations

import argparse
import itertools
from collections import deque
from collections.abc import Iterator
from typing import Any

import orjson

from load_tests import mock_wire as wire
from load_tests.mock_asgi import read_body, respond
from load_tests.mock_upstream import recorded_request, uvicorn_config

SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error"}


def error_body(status: int, message: str, kind: str | None = None) -> bytes:
    error = {"type": kind or ERROR_TYPES.get(status, "api_error"), "message": message}
    return orjson.dumps({"type": "error", "error": error, "request_id": "req_mock"})


class MockAnthropic:
    """The ASGI app; all its state (key, recorded requests, id counter) lives here."""

    def __init__(self, api_key: str | None = None, max_recorded: int = 100) -> None:
        self.api_key = api_key.encode() if api_key else None
        self.recorded: deque = deque(maxlen=max_recorded)
        self._ids = itertools.count(1)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": message["type"] + ".complete"})
            await send({"type": "lifespan.shutdown.complete"})
        elif scope["type"] == "http":
            await self.http(scope, receive, send)

    async def http(self, scope: dict, receive: Any, send: Any) -> None:
        path, method = scope["path"], scope["method"]
        body = await read_body(receive)
        if path == "/health":
            return await respond(send, 200, b'{"status":"ok"}')
        if path.startswith("/_mock/"):
            return await self.control(method, path, send)
        self.recorded.append((method, path, scope["headers"], body))
        if (method, path) != ("POST", "/v1/messages"):
            return await respond(send, 404, error_body(404, f"Not found: {method} {path}"))
        status, answer = self.check(dict(scope["headers"]), body)
        if status != 200:
            return await respond(send, status, answer)
        await self.messages(orjson.loads(body), send)

    def check(self, headers: dict[bytes, bytes], raw: bytes) -> tuple[int, bytes]:
        """The error Anthropic would answer for this request, or (200, b"")."""
        if self.api_key is not None and headers.get(b"x-api-key") != self.api_key:
            return 401, error_body(401, "invalid x-api-key")
        if not headers.get(b"anthropic-version"):
            return 400, error_body(400, "anthropic-version: header is required")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return 400, error_body(400, "There was an issue with the format of your request: invalid JSON")
        for field, kind in (("model", str), ("max_tokens", int), ("messages", list)):
            if not isinstance(body, dict) or not isinstance(body.get(field), kind):
                return 400, error_body(400, f"{field}: Field required")
        if body["model"].startswith("fail529"):
            return 529, error_body(529, "Overloaded", "overloaded_error")
        return 200, b""

    async def messages(self, body: dict, send: Any) -> None:
        user, results = last_user_turn(body["messages"])
        tool = None if results else chosen_tool(body)
        message = {
            "id": f"msg_mock{next(self._ids)}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": prompt_words(body), "output_tokens": 1},
        }
        block = tool_use(tool, f"toolu_mock{next(self._ids)}", user) if tool else text("Echo: " + user)
        output_tokens = wire.words(orjson.dumps(block.get("input")).decode() if tool else block["text"])
        stop_reason = "tool_use" if tool else "end_turn"
        if body.get("stream") is True:
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            for event in events(message, block, stop_reason, output_tokens):
                await send({"type": "http.response.body", "body": event, "more_body": True})
            return await send({"type": "http.response.body", "body": b""})
        message |= {"content": [block], "stop_reason": stop_reason}
        message["usage"]["output_tokens"] = output_tokens
        await respond(send, 200, orjson.dumps(message))

    async def control(self, method: str, path: str, send: Any) -> None:
        if method == "DELETE" and path in ("/_mock/requests", "/_mock/faults", "/_mock/stats"):
            if path == "/_mock/requests":
                self.recorded.clear()
            return await respond(send, 200, b'{"ok":true}')
        if method == "GET" and path == "/_mock/requests":
            return await respond(send, 200, orjson.dumps([recorded_request(*entry) for entry in self.recorded]))
        await respond(send, 404, error_body(404, f"Unknown control URL: {method} {path}"))


# ---------------------------------------------------------------- Anthropic bodies


def last_user_turn(messages: list) -> tuple[str, bool]:
    """The text of the last user turn (tool results' text included), and whether it carries tool results."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            blocks = message.get("content")
            if isinstance(blocks, str):
                return blocks, False
            blocks = [b for b in blocks or () if isinstance(b, dict)]
            results = [b for b in blocks if b.get("type") == "tool_result"]
            texts = [wire.content_text(b.get("content")) for b in results] + [b.get("text", "") for b in blocks]
            return "".join(t for t in texts if isinstance(t, str)), bool(results)
    return "", False


def prompt_words(body: dict) -> int:
    system = body.get("system") if isinstance(body.get("system"), str) else ""
    return wire.words(system) + sum(wire.words(last_user_turn([m])[0]) for m in body["messages"])


def chosen_tool(body: dict) -> str | None:
    tools, choice = body.get("tools"), body.get("tool_choice") or {}
    if not isinstance(tools, list) or not tools or choice.get("type") == "none":
        return None
    if choice.get("type") == "tool":
        return str(choice.get("name"))
    return str(tools[0].get("name"))


def text(reply: str) -> dict:
    return {"type": "text", "text": reply}


def tool_use(name: str, ident: str, user: str) -> dict:
    return {"type": "tool_use", "id": ident, "name": name, "input": {"echo": user}}


def sse(payload: dict) -> bytes:
    return b"event: " + payload["type"].encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def events(message: dict, block: dict, stop_reason: str, output_tokens: int) -> Iterator[bytes]:
    """Anthropic's event sequence for a one-block answer, the block's text or input cut into pieces."""
    yield sse({"type": "message_start", "message": message})
    start = text("") if block["type"] == "text" else {**block, "input": {}}
    yield sse({"type": "content_block_start", "index": 0, "content_block": start})
    yield sse({"type": "ping"})
    if block["type"] == "text":
        deltas = [{"type": "text_delta", "text": piece} for piece in wire.pieces(block["text"])]
    else:
        arguments = orjson.dumps(block["input"]).decode()
        deltas = [{"type": "input_json_delta", "partial_json": p} for p in ["", *wire.pieces(arguments)]]
    for delta in deltas:
        yield sse({"type": "content_block_delta", "index": 0, "delta": delta})
    yield sse({"type": "content_block_stop", "index": 0})
    usage = {"output_tokens": output_tokens}
    yield sse({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None}, "usage": usage})
    yield sse({"type": "message_stop"})


def create_app(api_key: str | None = None) -> MockAnthropic:
    return MockAnthropic(api_key)


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--api-key")
    args = parser.parse_args(argv)
    uvicorn.Server(uvicorn_config(create_app(args.api_key), host=args.host, port=args.port)).run()


if __name__ == "__main__":
    main()
