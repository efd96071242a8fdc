"""Server-sent events as the gateway reads them from an upstream: cut from arbitrary network chunks, parsed,
re-rendered with a new payload (the other lines kept).

    Splitter().feed(chunk) -> [raw event, ...]   each with its blank-line terminator, whatever the chunking
    event_data(raw) -> bytes | None              the event's data (None: it has none)
    Event.parse(raw).render(payload)             the event with its data replaced
"""

import re
from dataclasses import dataclass
from typing import Any, Self

from gateway import codec

_BOUNDARY = re.compile(rb"\r?\n\r?\n")
DONE = b"[DONE]"


class Splitter:
    """Cuts a byte stream into SSE events (each with its blank-line terminator), whatever the chunking."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        """The events `chunk` completes. A blank line is "\n\n" or "\n\r\n" after a line's end, so only
        the line feeds are looked at (bytes.find, faster than a regex here)."""
        old = len(self._buffer)
        buffer = self._buffer + chunk if old else chunk
        events: list[bytes] = []
        start = 0
        at = max(0, old - 2)  # a line feed in the last two bytes may not have been decided yet
        while (at := buffer.find(b"\n", at)) >= 0:
            if buffer[at + 1 : at + 2] == b"\n":
                end = at + 2
            elif buffer[at + 1 : at + 3] == b"\r\n":
                end = at + 3
            else:
                at += 1
                continue
            events.append(buffer[start:end])
            start = at = end
        self._buffer = buffer[start:]
        return events

    def rest(self) -> bytes:
        rest, self._buffer = self._buffer, b""
        return rest


@dataclass(slots=True)
class Event:
    """One SSE event: its lines (without line ends), the line end used, and the terminating blank line."""

    lines: list[bytes]
    eol: bytes
    boundary: bytes

    @classmethod
    def parse(cls, raw: bytes) -> Self:
        match = _BOUNDARY.search(raw, max(0, len(raw) - 4))
        boundary = raw[match.start() :] if match is not None and match.end() == len(raw) else b""
        body = raw[: len(raw) - len(boundary)]
        eol = b"\r\n" if (boundary or body).find(b"\r\n") >= 0 else b"\n"
        return cls([line.removesuffix(b"\r") for line in body.split(b"\n")], eol, boundary)

    def data(self) -> bytes | None:
        """The event's data (its data lines joined), or None if it has none."""
        values = [_field_value(line) for line in self.lines if line.startswith(b"data:")]
        return b"\n".join(values) if values else None

    def render(self, payload: dict[str, Any]) -> bytes:
        """The event with its data replaced by `payload`, other lines (event:, id:, comments) kept."""
        data_line = b"data: " + codec.dumps(payload)
        lines: list[bytes] = []
        for line in self.lines:
            if not line.startswith(b"data:"):
                lines.append(line)
            elif data_line:
                lines.append(data_line)
                data_line = b""
        return self.eol.join(lines) + (self.boundary or self.eol + self.eol)


def event_data(raw: bytes) -> bytes | None:
    """The data of a raw event, or None if it has none; one `data: ` line and "\n\n" (the usual) are quick."""
    if raw.startswith(b"data: ") and raw.endswith(b"\n\n") and raw.count(b"\n") == 2 and b"\r" not in raw:
        return raw[6:-2]
    return Event.parse(raw).data()


def _field_value(line: bytes) -> bytes:
    value = line[5:]
    return value[1:] if value.startswith(b" ") else value
