"""Anthropic's Messages event stream → OpenAI `chat.completion.chunk` server-sent events. Pure: no I/O.

    message_start                          →  first chunk, delta {role: "assistant", content: ""}
    content_block_start (tool_use)         →  delta tool_calls[i] {id, type: "function", function {name, arguments: ""}}
    content_block_delta text_delta         →  delta {content: text}
    content_block_delta input_json_delta   →  delta tool_calls[i].function.arguments (one fragment)
    message_delta with a stop_reason       →  a chunk with an empty delta and the finish_reason
    message_stop                           →  the usage chunk (choices: [], usage), then `data: [DONE]`
    error                                  →  `data: {"error": {...}}`, and the stream ends there
    ping, content_block_stop, thinking and signature deltas, events not known yet  →  nothing

`i` counts the tool_use blocks of the answer (0, 1, …), whatever their Anthropic block index.

The usage chunk (`choices: []`, then `usage`) ends the stream only when the client asked for it with
`stream_options.include_usage`, as OpenAI does (the adapter passes that flag to `translate`).

Bytes arrive cut anywhere, even inside a UTF-8 character: `SSEDecoder` keeps the unfinished line and event
between chunks. A stream that ends without `message_stop` ends with an error event unless the answer's
stop reason had already arrived, so a cut-off answer never looks complete to the client.
"""

from collections.abc import AsyncIterator
from typing import Any

from gateway import codec
from gateway.upstream import anthropic_response
from gateway.upstream.anthropic_response import finish_reason

DONE = b"data: [DONE]\n\n"


class SSEDecoder:
    """Server-sent events from bytes cut anywhere: `feed` chunks, get the data of each complete event."""

    def __init__(self) -> None:
        self._pending = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        data = self._pending + chunk
        held = b""
        if data.endswith(b"\r"):  # maybe the first half of \r\n
            data, held = data[:-1], b"\r"
        *lines, rest = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        self._pending = rest + held
        return [event for event in map(self._line, lines) if event is not None]

    def close(self) -> list[bytes]:
        """The last event, should the stream end without the blank line that finishes it."""
        events = self.feed(b"\n\n") if self._pending or self._data else []
        self._pending = b""
        return events

    def _line(self, line: bytes) -> bytes | None:
        if not line:
            event, self._data = self._data, []
            return b"\n".join(event) if event else None
        field, _, value = line.partition(b":")
        if field == b"data":
            self._data.append(value[1:] if value.startswith(b" ") else value)
        return None  # `event:` names repeat the data's own "type"; comments and ids are of no use here


class ChunkWriter:
    """The OpenAI SSE bytes for each Anthropic event of one stream, fed in order."""

    def __init__(self, created: int, include_usage: bool = True) -> None:
        self.head: dict[str, Any] = {"id": "", "object": "chat.completion.chunk", "created": created, "model": ""}
        self.include_usage = include_usage
        self.tool_indexes: dict[int, int] = {}
        self.counts: dict[str, Any] = {}
        self.stopped = False
        self.done = False

    def event(self, data: bytes) -> bytes:
        try:
            event = codec.loads(data)
            return self._event(event) if isinstance(event, dict) else b""
        except (codec.JSONDecodeError, KeyError, TypeError, AttributeError):
            return self._error({"type": "api_error", "message": "The model server sent a malformed stream event."})

    def end(self) -> bytes:
        """What follows the upstream's last byte: nothing after message_stop, else the end of the stream."""
        if self.done:
            return b""
        if self.stopped:
            return self._finish()
        return self._error({"type": "api_error", "message": "The model server ended the stream before the answer."})

    def _event(self, event: dict[str, Any]) -> bytes:
        match event.get("type"):
            case "message_start":
                return self._start(event["message"])
            case "content_block_start":
                return self._block_start(event["index"], event["content_block"])
            case "content_block_delta":
                return self._block_delta(event["index"], event["delta"])
            case "message_delta":
                return self._message_delta(event)
            case "message_stop":
                return self._finish()
            case "error":
                return self._error(event["error"])
        return b""

    def _start(self, message: dict[str, Any]) -> bytes:
        self.head["id"], self.head["model"] = message["id"], message["model"]
        self.counts.update(message.get("usage") or {})
        return self._chunk({"role": "assistant", "content": ""})

    def _block_start(self, index: int, block: dict[str, Any]) -> bytes:
        if block["type"] == "tool_use":
            self.tool_indexes[index] = position = len(self.tool_indexes)
            function = {"name": block["name"], "arguments": ""}
            return self._chunk({"tool_calls": [{"index": position, "id": block["id"], "type": "function",
                                                "function": function}]})  # fmt: skip
        if block["type"] == "text" and block.get("text"):
            return self._chunk({"content": block["text"]})
        return b""

    def _block_delta(self, index: int, delta: dict[str, Any]) -> bytes:
        if delta["type"] == "text_delta":
            return self._chunk({"content": delta["text"]})
        if delta["type"] == "input_json_delta" and delta["partial_json"] and index in self.tool_indexes:
            fragment = {"index": self.tool_indexes[index], "function": {"arguments": delta["partial_json"]}}
            return self._chunk({"tool_calls": [fragment]})
        return b""

    def _message_delta(self, event: dict[str, Any]) -> bytes:
        self.counts.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
        stop_reason = (event.get("delta") or {}).get("stop_reason")
        if not stop_reason:
            return b""
        self.stopped = True
        return self._chunk({}, finish_reason(stop_reason))

    def _finish(self) -> bytes:
        self.done = True
        if not self.include_usage:
            return DONE
        return _sse({**self.head, "choices": [], "usage": anthropic_response.usage(self.counts)}) + DONE

    def _error(self, error: dict[str, Any]) -> bytes:
        self.done = True
        kind, message = str(error.get("type") or "api_error"), str(error.get("message") or "")
        code = anthropic_response.error_code(kind, message)
        body = {"message": message, "type": anthropic_response.error_type(kind), "param": None, "code": code}
        return _sse({"error": body})

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _sse({**self.head, "choices": [choice]})


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + codec.dumps(payload) + b"\n\n"


async def translate(chunks: AsyncIterator[bytes], created: int, include_usage: bool = True) -> AsyncIterator[bytes]:
    """The OpenAI SSE stream for Anthropic's SSE `chunks`; an upstream break propagates unchanged."""
    decoder, writer = SSEDecoder(), ChunkWriter(created, include_usage)
    async for chunk in chunks:
        for data in decoder.feed(chunk):
            if out := writer.event(data):
                yield out
            if writer.done:
                return
    for data in decoder.close():
        if out := writer.event(data):
            yield out
        if writer.done:
            return
    yield writer.end()
