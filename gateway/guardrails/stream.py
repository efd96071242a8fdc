"""Output guardrails on answers: a whole JSON body (`scan_json`) or an SSE stream checked as it flows (`StreamGuard`).

The stream is checked incrementally. Each logical text stream of the answer (a choice's content, a tool
call's arguments, a Responses output part: the stream keys of gateway.guardrails.texts) keeps a carry-over
of its last `window` characters (the longest match of any rule), and each rule scans a text delta together
with the last `rule.check.window` characters before it, so a match split across deltas, events or network
chunks is found; only hits that end in the new text count, so none is reported twice.

    block          record the finding, send the error event `blocked(finding)`, end the stream; the
                   offending event and everything after it never reach the client
    warn, shadow   record the first finding of each rule, forward unchanged
    redact         hold text back per stream key, so the client never sees a match, even one split
                   across chunks: only text that can no longer be part of a match is released (all but
                   the last window-1 characters, never cutting a detected match), matches replaced by
                   the rule's replacement

Where held-back text goes: into the delta of the next event on the same key (each event carries what
could be released when it arrived). When the key ends, the rest is flushed: into the ending event itself
if it carries text on that key (a completions chunk with its finish_reason); otherwise into a synthesized
delta event on that key (`texts.stream_delta_event`, same framing as the key's last delta event, for the
Responses API with that event's `sequence_number`) sent just before the ending event, before `[DONE]`,
or at the end of the source. The client's deltas of a key concatenate to exactly the redacted text. With
a redact rule the Responses API's done events and response objects, which restate the whole text, are
redacted too; without one they pass untouched (their text was checked as deltas). With a redact rule, token
log probabilities are dropped from every event with text (and from a redacted JSON answer): they spell out
the original tokens, and no longer line up with the shifted deltas anyway.

Tentative findings: a hit that ends exactly at the end of its key's text so far may not survive more text
(a check that looks at the character after a match, like a word boundary, sees the end of the text there:
"class" is found in "class", not in "class" + "ification"). Such a finding, of any rule, is tentative: it
is neither recorded nor acted on, and the key's next text is scanned together with it again (the scan of a
delta counts hits that end at or after the end of the text before it). It is confirmed when the rescan
still finds a hit there (a block then blocks at that event), or when the key ends (the key's ending event,
`[DONE]`, the end of the source: the text really ends there); if the rescan finds nothing, it is gone.
While a finding is tentative its text must not reach the client:
  - without a redact rule, the event that carried it is held back, as its original bytes, together with
    every event after it (other keys', events without text), in order, until no finding is tentative;
    then they go out unchanged, or, on a block, never;
  - with a redact rule, the text of a tentative hit is held back like a match (the release never cuts
    into it), so events go on flowing with the text before it.
An event that makes nothing tentative (the usual case) goes out at once, in the network chunk it came in.

Fast path: an event whose text is unchanged goes out as its original bytes; only changed events are
re-serialised. Malformed input (non-JSON data, broken UTF-8, odd shapes) passes through, nothing raises.
"""

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway import codec
from gateway.guardrails.base import Finding, Hit, TextRule, apply, redact, strictest
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

# ---------------------------------------------------------------- non-streamed answers


def scan_json(
    endpoint: str, body: bytes, rules: Sequence[TextRule], record: Callable[[Finding], None]
) -> tuple[bytes, Finding | None]:
    """Check every text of a complete answer: (the body, re-serialised only if something was redacted;
    the strictest block finding or None). `record` gets the first finding of each rule."""
    parsed = codec.loads_object(body)
    if parsed is None or not rules:
        return body, None
    findings: list[Finding] = []
    changed = False
    for slot in response_slots(endpoint, parsed):
        text = slot.get()
        redacted, found = apply(rules, text)
        findings += found
        if redacted != text:
            slot.set(redacted)
            changed = True
    if changed:
        drop_logprobs(endpoint, parsed)
    for finding in _first_per_rule(findings, set()):
        record(finding)
    block = strictest([f for f in findings if f.rule.action == "block"])
    return (codec.dumps(parsed) if changed else body), block


def _first_per_rule(findings: Sequence[Finding], seen: set[int]) -> list[Finding]:
    """The findings of rules not in `seen` (rule ids), the first of each; `seen` is updated."""
    first: list[Finding] = []
    for finding in findings:
        if id(finding.rule) not in seen:
            seen.add(id(finding.rule))
            first.append(finding)
    return first


# ---------------------------------------------------------------- the stream guard


@dataclass(slots=True)
class _Key:
    """The state of one stream key: the raw text before `pending` (the carry), the raw text held back,
    where the carry starts in the key's whole text, the redactions found in the held-back text and the
    tentative findings (hits ending at the end of the text so far), both as spans in the whole text, and
    the last event that carried a delta on it (the template of a flush event)."""

    context: str = ""
    pending: str = ""
    offset: int = 0
    spans: list[Finding] = field(default_factory=list)
    tentative: list[Finding] = field(default_factory=list)
    template: tuple[bytes, dict[str, Any]] | None = None


class _Blocked(Exception):
    def __init__(self, finding: Finding) -> None:
        self.finding = finding


class StreamGuard:
    """Checks one SSE answer as it streams through; `run` wraps the upstream's byte iterator."""

    def __init__(
        self,
        endpoint: str,
        rules: Sequence[TextRule],
        record: Callable[[Finding], None],
        blocked: Callable[[Finding], bytes],
    ) -> None:
        self.endpoint = endpoint
        self.rules = tuple(rules)
        self.record = record
        self.blocked = blocked
        self._scans = [(rule, max(rule.check.window, 0)) for rule in self.rules]
        self.window = max((window for _, window in self._scans), default=0)
        self.holdback = any(rule.action == "redact" for rule in self.rules)
        self._keep = max(self.window - 1, 0) if self.holdback else 0
        self._keys: dict[str, _Key] = {}
        self._recorded: set[int] = set()
        self._unsure = 0  # how many keys have tentative findings
        self._held: list[bytes] = []  # events held back behind a tentative finding (no redact rule)

    async def run(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The checked stream: one piece per network chunk that completed an event, forwarded or rewritten;
        on a block, what came before the offending event, then the block event, then the end."""
        if not self.rules:
            async for chunk in chunks:
                yield chunk
            return
        splitter = Splitter()
        async for chunk in chunks:
            out, block = self._events(splitter.feed(chunk))
            if out or block:
                yield b"".join(out) + (self.blocked(block) if block else b"")
            if block:
                return
        rest = splitter.rest()
        out, block = self._events([rest] if rest else [], final=True)
        if out or block:
            yield b"".join(out) + (self.blocked(block) if block else b"")

    def _events(self, raws: list[bytes], final: bool = False) -> tuple[list[bytes], Finding | None]:
        """What to send for some raw events, up to the one a block rule stops (and that finding); `final`:
        the source ends after them (with no raw events: just end every key)."""
        out: list[bytes] = []
        try:
            for raw in raws:
                out += self._release(self._event(raw, final))
            if final and not raws:
                out += self._release(self._ending([EVERY_KEY], []))
        except _Blocked as blocked:
            self._held = []  # held events come after a tentative finding's start: never sent
            return out, blocked.finding
        return out, None

    def _release(self, out: list[bytes]) -> list[bytes]:
        """What may go out now of one event's pieces: nothing while a finding is tentative and nothing is
        held back by redaction (they queue behind the held events), else the held events, then them."""
        if self._unsure and not self.holdback:
            self._held += out
            return []
        if self._held:
            out = self._held + out
            self._held = []
        return out

    # -------------------------------------------------------- one event

    def _event(self, raw: bytes, final: bool = False) -> list[bytes]:
        """What to send for one raw event: flush events for keys it ends, then the event itself."""
        data = event_data(raw)
        payload = codec.loads_object(data) if data is not None and data != DONE else None
        if payload is not None:  # not a JSON object: passed through as it came
            return self._payload(raw, payload, final)
        return [*self._ending([EVERY_KEY], []), raw] if final or data == DONE else [raw]

    def _payload(self, raw: bytes, payload: dict[str, Any], final: bool) -> list[bytes]:
        scopes = stream_ends(self.endpoint, payload)
        if final:
            scopes.append(EVERY_KEY)
        findings: list[Finding] = []
        changed = False
        slots = stream_slots(self.endpoint, payload)
        for key, slot in slots:
            changed |= self._delta(key, slot, (raw, payload), scopes, findings)
        if self.holdback:
            snapshots = stream_snapshots(self.endpoint, payload)
            changed |= self._snapshots(snapshots, findings)
            if slots or snapshots:
                changed |= drop_logprobs(self.endpoint, payload)
        out = self._ending(scopes, findings)
        out.append(Event.parse(raw).render(payload) if changed else raw)
        return out

    def _delta(
        self, key: str, slot: Slot, event: tuple[bytes, dict[str, Any]], scopes: list[str], findings: list[Finding]
    ) -> bool:
        """Scan one delta on `key`; put what may be released in its place. True if that changed it."""
        text = slot.get()
        last = bool(scopes) and any(ended(key, scope) for scope in scopes)
        if not text and not last:
            return False
        state = self._keys.get(key)
        if state is None:
            state = self._keys[key] = _Key()
        released = self._feed(state, text, last, findings)
        if self.holdback:
            state.template = event
        if last:
            del self._keys[key]
        if released == text:
            return False
        slot.set(released)
        return True

    def _snapshots(self, snapshots: list[Slot], findings: list[Finding]) -> bool:
        """Redact the full texts a Responses event restates (done events, output items, responses)."""
        changed = False
        for slot in snapshots:
            text = slot.get()
            redacted, found = apply(self.rules, text)
            findings += found
            if redacted != text:
                slot.set(redacted)
                changed = True
        return changed

    def _ending(self, scopes: list[str], findings: list[Finding]) -> list[bytes]:
        """End the keys `scopes` cover (their tentative findings confirmed, added to `findings`), then act
        on `findings` (may raise _Blocked); the flush events releasing the ended keys' held-back text."""
        out = [piece for scope in scopes for piece in self._end(scope, findings)] if scopes else []
        if findings:
            self._settle(findings)
        return out

    def _settle(self, findings: list[Finding]) -> None:
        """Record the first finding of each rule; raise _Blocked if a block rule matched."""
        for finding in _first_per_rule(findings, self._recorded):
            self.record(finding)
        block = strictest([f for f in findings if f.rule.action == "block"])
        if block is not None:
            raise _Blocked(block)

    # -------------------------------------------------------- the carry-over and the held-back text

    def _feed(self, state: _Key, delta: str, last: bool, findings: list[Finding]) -> str:
        """Scan `delta` after the key's carry and held-back text; new findings (spans in the key's whole
        text) are added to `findings`, or kept as tentative when they end at the end of the text (unless
        `last`). Returns the text that may be released now (all when `last`), redacted.

        Each rule scans only its own window of text before the delta: a hit is found once, when the text
        it ends in arrives, or, if it ends at the end of that text, again with the next delta (so hits that
        end at or after the end of the text before the delta count). The redactions found in text still
        held back and the tentative findings are kept with the key."""
        base = len(state.context)
        fresh = base + len(state.pending)
        text = state.context + state.pending + delta
        offset = state.offset  # where `text` starts in the key's whole text
        unsure = bool(state.tentative)
        if delta:
            state.tentative = self._scan(state, text, fresh, last, findings)
        elif last and unsure:
            for found in state.tentative:
                findings.append(found)
                if found.rule.action == "redact":
                    state.spans.append(found)
            state.tentative = []
        if unsure or state.tentative:
            self._unsure += bool(state.tentative) - unsure
        if not self.holdback:
            state.context = _tail(text, self.window)
            state.offset += len(text) - len(state.context)
            return delta
        spans = [(max(f.hit.start - offset, base), f.hit.end - offset, f) for f in state.spans]
        if last:
            cut = len(text)
        else:
            barriers = spans + [(max(f.hit.start - offset, base), f.hit.end - offset, f) for f in state.tentative]
            cut = _safe_cut(barriers, max(base, len(text) - self._keep))
        done = [Finding(f.rule, Hit(s - base, e - base, f.hit.label)) for s, e, f in spans if e <= cut]
        state.spans = [f for _, e, f in spans if e > cut]
        state.context = _tail(text[:cut], self.window)
        state.offset += cut - len(state.context)
        state.pending = text[cut:]
        released = text[base:cut]
        return redact(released, done) if done else released

    def _scan(self, state: _Key, text: str, fresh: int, last: bool, findings: list[Finding]) -> list[Finding]:
        """Run every rule on the end of `text` (the new text starts at `fresh`): confirmed findings go to
        `findings` (and redactions to the key's spans); returns the tentative ones."""
        offset = state.offset
        end = len(text)
        tentative: list[Finding] = []
        for rule, window in self._scans:
            start = max(0, fresh - window)
            for hit in rule.check.scan(text[start:] if start else text):
                hit_end = hit.end + start
                if hit_end < fresh:
                    continue  # ended in text scanned before
                found = Finding(rule, Hit(hit.start + start + offset, hit_end + offset, hit.label))
                if hit_end == end and not last:
                    tentative.append(found)
                    continue
                findings.append(found)
                if rule.action == "redact":
                    state.spans.append(found)
        return tentative

    def _end(self, scope: str, findings: list[Finding]) -> list[bytes]:
        """End the keys `scope` covers (a key the ending event itself carries ended with it and is gone
        already): their tentative findings are confirmed into `findings`, their state is dropped, and the
        result is the synthesized delta events releasing their held-back text."""
        out: list[bytes] = []
        for key in [key for key in self._keys if ended(key, scope)]:
            state = self._keys.pop(key)
            if not state.pending and not state.tentative:
                continue
            text = self._feed(state, "", True, findings)
            if state.template is None or not text:
                continue
            raw, template = state.template
            payload = stream_delta_event(self.endpoint, template, key, text)
            if payload is not None:
                out.append(Event.parse(raw).render(payload))
        return out


def _tail(text: str, size: int) -> str:
    return text[-size:] if size > 0 else ""


def _safe_cut(spans: list[tuple[int, int, Finding]], cut: int) -> int:
    """Move `cut` back to the start of a redaction it falls inside (overlapping spans merged, as
    base.redact merges them), so a match is never released in part."""
    start = end = -1
    for span_start, span_end, _ in sorted(spans, key=lambda s: (s[0], -s[1])):
        if span_start < end:  # overlaps the merged span: extend it
            end = max(end, span_end)
            continue
        if start < cut < end:
            return start
        start, end = span_start, span_end
    return start if start < cut < end else cut
