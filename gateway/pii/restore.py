"""Restoring pseudonymised values in an answer: a whole JSON body (`restore_json`) or an SSE stream as it flows
(`StreamRestorer`). The vault of the request says which placeholders stand for which values. A stream may
also be masked on its way (a pii rule with `output: mask`, gateway.pii.output): the one I/O here is then
the analyzer's.

A model may cut a placeholder anywhere when it streams ("<EMA", "IL_ADD", "RESS_1> today"), so each stream
key (gateway.guardrails.texts) holds back the text from its last "<" not yet closed by ">" while that text can
still become a placeholder (it looks like the start of one and is shorter than the longest placeholder the
vault issued); everything before it is restored and sent in the event it came in. The held text goes into
the key's next delta, or, when the key ends (the event ending it, `[DONE]`, the end of the source), into the
ending event itself if it carries text on that key, else into a delta event on that key synthesized just
before it (`texts.stream_delta_event`, as the stream guard flushes its holdback). So the client's deltas of a
key concatenate to exactly the restored text, and no event carries part of a placeholder.

With a masker, each key also holds back its last `masker.window` characters (a value is found only once
complete) and releases at least MIN_RELEASE characters at a time: the text released is analyzed together
with the held text after it, the release never cuts a value found, and the values in it are masked before
the placeholders are restored. Token log probabilities are then dropped from events with text. The analyzer
failing ends the stream with the `refused` error event (fail_closed), or leaves the rest unmasked and says
so in `unchecked` (fail_open).

The Responses API's done events and response objects restate the whole text: their placeholders are
restored too. In tool-call arguments (JSON text) values are inserted JSON-escaped.

Fast paths: with no pseudonyms in the vault a body or stream passes untouched; an event with no "<" while
nothing is held goes out as its original bytes without being parsed; only changed events are re-serialised.
Malformed input (non-JSON data, odd shapes) passes through, nothing raises.
"""

import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from gateway import codec
from gateway.guardrails.sse import DONE, Event, Splitter, event_data
from gateway.guardrails.texts import (
    EVERY_KEY,
    Slot,
    drop_logprobs,
    ended,
    response_slots,
    stream_delta_event,
    stream_ends,
    stream_slots,
    stream_snapshots,
)
from gateway.pii.engine import PiiUnavailableError
from gateway.pii.output import MIN_RELEASE, OutputMasker
from gateway.pii.vault import Span, Vault, restore

# Text that may still grow into a placeholder <[A-Z_]+_\d+>: "<", "<EMAIL_ADD", "<EMAIL_ADDRESS_1".
_PREFIX = re.compile(r"<[A-Z_]*(?:_\d+)?")
# "<" as it may appear in JSON bytes: itself or escaped (\u003c, \u003C).
_ESCAPED_LT = b"\\u003"


def _may_hold_placeholder(data: bytes) -> bool:
    return b"<" in data or _ESCAPED_LT in data


def _restore_slot(slot: Slot, vault: Vault, json_string: bool) -> bool:
    """Restore one string in place; True if it changed."""
    text = slot.get()
    restored = restore(text, vault, json_string=json_string)
    if restored == text:
        return False
    slot.set(restored)
    return True


def restore_json(endpoint: str, body: bytes, vault: Vault) -> bytes:
    """A complete answer with the placeholders of every text the model produced restored; the body itself
    when there is nothing to restore."""
    if not vault.originals or not _may_hold_placeholder(body):
        return body
    parsed = codec.loads_object(body)
    if parsed is None:
        return body
    changed = False
    for slot in response_slots(endpoint, parsed):
        changed |= _restore_slot(slot, vault, slot.key == "arguments")
    return codec.dumps(parsed) if changed else body


def _json_key(key: str) -> bool:
    """Whether a stream key carries tool-call arguments (JSON text): chat "0:tool:1", "0:function",
    Responses "0:arguments" (a custom tool's "0:input" is free text)."""
    parts = key.split(":", 2)
    return len(parts) > 1 and parts[1] in ("tool", "function", "arguments")


@dataclass(slots=True)
class _Held:
    """The text a stream key holds back, and the last event that carried a delta on it (raw, parsed): the
    template of a flush event."""

    text: str
    template: tuple[bytes, dict[str, Any]]


class Refused(Exception):
    """The analyzer of an output-masking rule failed, fail closed: the stream ends with an error event."""


class StreamRestorer:
    """Restores placeholders in one SSE answer as it streams through, masking what `masker` finds first when
    a rule asks for it; `run` wraps the upstream's byte iterator. `refused(exc)` is the error event that ends
    the stream when the analyzer fails under fail_closed."""

    def __init__(
        self,
        endpoint: str,
        vault: Vault,
        masker: OutputMasker | None = None,
        refused: Callable[[PiiUnavailableError], bytes] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.vault = vault
        self.masker = masker
        self.refused = refused
        self.unchecked: PiiUnavailableError | None = None  # the analyzer failed under fail_open: left unmasked
        self._longest = vault.longest
        self._keys: dict[str, _Held] = {}  # only keys holding text back

    async def run(self, chunks: AsyncIterator[bytes]) -> AsyncGenerator[bytes, None]:
        """The restored stream: one piece per network chunk that completed an event."""
        if not self.vault.originals and self.masker is None:
            async for chunk in chunks:
                yield chunk
            return
        self._longest = self.vault.longest
        splitter = Splitter()
        try:
            async for chunk in chunks:
                out = [piece for raw in splitter.feed(chunk) for piece in await self._event(raw)]
                if out:
                    yield b"".join(out)
            rest = splitter.rest()
            out = await self._event(rest, final=True) if rest else await self._end([EVERY_KEY])
        except Refused as exc:
            assert isinstance(exc.__cause__, PiiUnavailableError)
            if self.refused is None:
                raise exc.__cause__ from None
            yield self.refused(exc.__cause__)
            return
        if out:
            yield b"".join(out)

    async def _event(self, raw: bytes, final: bool = False) -> list[bytes]:
        """What to send for one raw event: flush events for held keys it ends, then the event itself."""
        data = event_data(raw)
        if not self._keys and (data is None or (self.masker is None and not _may_hold_placeholder(data))):
            return [raw]  # nothing held, nothing to restore or mask
        payload = codec.loads_object(data) if data is not None and data != DONE else None
        if payload is not None:  # not a JSON object: passed through as it came
            return await self._payload(raw, payload, final)
        return [*await self._end([EVERY_KEY]), raw] if final or data == DONE else [raw]

    async def _payload(self, raw: bytes, payload: dict[str, Any], final: bool) -> list[bytes]:
        scopes = stream_ends(self.endpoint, payload)
        if final:
            scopes.append(EVERY_KEY)
        changed = False
        deltas = stream_slots(self.endpoint, payload)
        for key, slot in deltas:
            changed |= await self._delta(key, slot, (raw, payload), scopes)
        for slot in stream_snapshots(self.endpoint, payload):
            changed |= await self._whole(slot)
        if self.masker is not None and deltas and drop_logprobs(self.endpoint, payload):
            changed = True  # the log probabilities spell out the tokens as the model wrote them
        out = await self._end(scopes) if scopes else []
        out.append(Event.parse(raw).render(payload) if changed else raw)
        return out

    async def _delta(self, key: str, slot: Slot, event: tuple[bytes, dict[str, Any]], scopes: list[str]) -> bool:
        """Put the key's held text before this delta, hold back again what may still become a placeholder or a
        value to mask (unless the key ends here), release the rest in the delta's place. True if that changed
        the delta."""
        delta = slot.get()
        held = self._keys.pop(key, None)
        text = held.text + delta if held is not None else delta
        last = bool(scopes) and any(ended(key, scope) for scope in scopes)
        released, rest = await self._release(key, text, last)
        if rest:
            self._keys[key] = _Held(rest, event)
        if released == delta:
            return False
        slot.set(released)
        return True

    async def _release(self, key: str, text: str, last: bool) -> tuple[str, str]:
        """(the text of a key that goes out now, masked and restored; the text it keeps holding back)."""
        cut, spans = len(text), []
        if self.masker is not None:
            if not last:
                cut = len(text) - self.masker.window
                cut = cut if cut >= MIN_RELEASE else 0
            if cut:
                spans = await self._find(text)
                cut = cut if last else _before_spans(spans, cut)
        if not last:
            cut = self._cut(text[:cut])
        out = text[:cut]
        if spans:
            out = self.masker.apply(out, [span for span in spans if span.end <= cut])  # type: ignore[union-attr]
        return restore(out, self.vault, json_string=_json_key(key)), text[cut:]

    async def _whole(self, slot: Slot) -> bool:
        """Mask and restore a text restated whole (Responses API done events and response objects)."""
        text = slot.get()
        if self.masker is not None:
            text = self.masker.apply(text, await self._find(text))
        restored = restore(text, self.vault, json_string=slot.key == "arguments")
        if restored == slot.get():
            return False
        slot.set(restored)
        return True

    async def _find(self, text: str) -> list[Span]:
        assert self.masker is not None
        try:
            return (await self.masker.find([text]))[0]
        except PiiUnavailableError as exc:
            if not self.masker.fail_open:
                raise Refused() from exc
            self.unchecked, self.masker = exc, None  # fail_open: the rest of the answer passes unmasked
            return []

    def _cut(self, text: str) -> int:
        """Where the text that may still become a placeholder starts (len(text): none): the last "<", if what
        follows it looks like the start of a placeholder and is shorter than the longest one issued."""
        at = text.rfind("<")
        if at < 0 or len(text) - at >= self._longest or _PREFIX.fullmatch(text, at) is None:
            return len(text)
        return at

    async def _end(self, scopes: list[str]) -> list[bytes]:
        """End the held keys `scopes` cover: a delta event on each releasing its held text."""
        out: list[bytes] = []
        for scope in scopes:
            for key in [key for key in self._keys if ended(key, scope)]:
                held = self._keys.pop(key)
                raw, template = held.template
                text, _ = await self._release(key, held.text, last=True)
                payload = stream_delta_event(self.endpoint, template, key, text)
                if payload is not None:
                    out.append(Event.parse(raw).render(payload))
        return out


def _before_spans(spans: list[Span], cut: int) -> int:
    """`cut`, moved back to the start of any value it would split."""
    for span in sorted(spans, key=lambda span: span.start, reverse=True):
        if span.start < cut < span.end:
            cut = span.start
    return cut
