"""The bodies of audited requests, stored encrypted per team when `audit.bodies` is true, so that deleting a
team's key makes them unreadable (erasure by crypto-shredding: `gateway audit shred --team T`).

What is stored for a request, as one JSON document (the plaintext, never on disk in the clear):

    {"request": "...", "answer": "..." | null, "stream": {"0:content": "...", ...} | null, "truncated": false}

    request    the JSON body the Forward stage sent upstream (ctx.raw_body): after guardrail redaction and PII
               redaction or pseudonymisation, so placeholders such as <EMAIL_ADDRESS_1>, never the raw values
    answer     the upstream's answer (any status) after MaskAnswer masked what a pii rule with `output: mask`
               found in it, before RestorePii put the real values back: the KeepAnswer stage
               (gateway.audit.stage) sits between them, right after Forward
    stream     a streamed answer's text, accumulated per stream key (gateway.guardrails.texts)
    truncated  the request, or the answer (a stream's texts counted together), was longer than
               `audit.max_body_bytes` bytes and was cut there

Nothing is stored, and the column holds `{"v":1,"omitted":REASON}`, when

    not_forwarded    the request never reached an upstream (refused, blocked by a policy, failed before):
                     its body may hold exactly what a rule blocked, raw personal data included
    not_redacted     a pii or secrets rule found something and left it in place (a shadow or warn rule, a PII
                     analyzer that failed open), or a secrets rule matched the answer
    key_unavailable  the team's key could not be read or made (logged)

Events that are not a request with a body (budget alerts, requests refused before their body was read)
keep "". Without a pii rule nothing is redacted: the stored bodies are then the texts as sent.

The `body` column holds the envelope `{"v":1,"kid":KEY_ID,"nonce":B64,"ct":B64}`: AES-256-GCM under the
team's data key (gateway.audit.keyring) with the event id and the team as associated data, so a ciphertext
copied to another row or another team does not decrypt. Sealing happens in the request's worker before the
event is spooled: the spool never holds a plaintext body. The hash chain covers the column as stored, so
shredding a key changes nothing `gateway audit verify` looks at.
"""

import base64
import binascii
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag

from gateway import codec
from gateway.audit.keyring import NONCE_BYTES, Keyring, KeyringError, TeamKey
from gateway.guardrails import sse, texts
from gateway.pipeline import RequestContext

log = logging.getLogger("gateway.audit")

VERSION = 1
OMITTED = {
    "not_forwarded": "the request never reached an upstream (refused, blocked or failed before): its body may "
    "hold what a rule blocked",
    "not_redacted": "personal data or a secret was found and left in place (a shadow or warn rule, or the PII "
    "analyzer failed open), or a secret was found in the answer",
    "key_unavailable": "the team's body key could not be read or made when the request ended",
}
_UNREMOVED = frozenset({"shadow", "warn"})


class NoBody(Exception):
    """The event has no stored body (bodies were off, or it was left out on purpose: the message says why)."""


class Unreadable(Exception):
    """A stored body that cannot be decrypted."""


class Shredded(Unreadable):
    def __init__(self) -> None:
        super().__init__("the team's key was shredded")


@dataclass(slots=True)
class KeptAnswer:
    """The upstream's answer as the audit keeps it: a JSON body, or a stream's texts up to about `limit`."""

    limit: int
    body: bytes | None = None
    texts: dict[str, list[str]] = field(default_factory=dict)
    size: int = 0  # characters of stream text kept (at most as many as their UTF-8 bytes)
    full: bool = False  # the stream went past the limit: later text is not kept

    def take(self, endpoint: str, events: list[bytes]) -> None:
        """Keep the text deltas of these SSE events."""
        for key, text in texts.sse_texts(endpoint, events):
            self.texts.setdefault(key, []).append(text)
            self.size += len(text)
            if self.size > self.limit:
                self.full = True
                return


async def keep_stream(endpoint: str, kept: KeptAnswer, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The stream unchanged, its texts kept in `kept` as they pass (until the limit)."""
    splitter = sse.Splitter()
    try:
        async for chunk in chunks:
            if not kept.full:
                kept.take(endpoint, splitter.feed(chunk))
            yield chunk
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()


class Bodies:
    """Seals the body of each audited request (for the Audit stage), or says why none is stored."""

    def __init__(self, keyring: Keyring, max_bytes: int) -> None:
        self.keyring = keyring
        self.max_bytes = max_bytes

    def column(self, ctx: RequestContext, event_id: str, team: str) -> str:
        """The value of the event's `body` column."""
        reason = omission(ctx)
        if reason is not None:
            return omitted(reason) if reason else ""
        try:
            key = self.keyring.current(team)
        except (KeyringError, OSError) as exc:
            log.error("the body of request %s is not stored: %s", ctx.request_id, exc)
            return omitted("key_unavailable")
        return seal(key, event_id, team, document(ctx, self.max_bytes))


def omission(ctx: RequestContext) -> str | None:
    """Why the request's body is not stored ("" when there is none to speak of); None: store it."""
    if ctx.attempts == 0:
        return "not_forwarded" if ctx.raw_body else ""
    for decision in ctx.decisions:
        if decision.kind == "pii" and decision.action in _UNREMOVED:
            return "not_redacted"
        if decision.kind == "secrets" and (decision.where == "output" or decision.action in _UNREMOVED):
            return "not_redacted"
    return None


def document(ctx: RequestContext, limit: int) -> bytes:
    """The plaintext stored for a forwarded request (see the module docstring)."""
    request, truncated = _cut(ctx.raw_body, limit)
    answer: str | None = None
    stream: dict[str, str] | None = None
    kept = ctx.kept_answer
    if kept is not None and kept.body is not None:
        answer, cut = _cut(kept.body, limit)
        truncated |= cut
    elif kept is not None:
        stream, cut = _cut_texts(kept, limit)
        truncated |= cut
    return codec.dumps({"request": request, "answer": answer, "stream": stream, "truncated": truncated})


def _cut(data: bytes, limit: int) -> tuple[str, bool]:
    if len(data) <= limit:
        return data.decode("utf-8", "replace"), False
    return data[:limit].decode("utf-8", "ignore"), True  # "ignore" drops a character cut in two


def _cut_texts(kept: KeptAnswer, limit: int) -> tuple[dict[str, str], bool]:
    out: dict[str, str] = {}
    room, truncated = limit, kept.full
    for key, parts in kept.texts.items():
        text = "".join(parts)
        data = text.encode("utf-8")
        if len(data) > room:
            text, truncated = data[:room].decode("utf-8", "ignore"), True
        out[key] = text
        room -= min(len(data), room)
    return out, truncated


def omitted(reason: str) -> str:
    return codec.dumps({"v": VERSION, "omitted": reason}).decode()


def seal(key: TeamKey, event_id: str, team: str, plaintext: bytes) -> str:
    """The envelope of `plaintext`, bound to the event and the team."""
    nonce = os.urandom(NONCE_BYTES)
    sealed = key.aead.encrypt(nonce, plaintext, _aad(event_id, team))
    envelope = {"v": VERSION, "kid": key.kid, "nonce": _b64(nonce), "ct": _b64(sealed)}
    return codec.dumps(envelope).decode()


def reveal(keyring: Keyring, body: str, event_id: str, team: str) -> dict[str, Any]:
    """The stored document of an event's `body` column; NoBody, Shredded or Unreadable when there is none."""
    if not body:
        raise NoBody("no body was stored for this event (audit.bodies was off when it was recorded)")
    envelope = _envelope(body)
    if "omitted" in envelope:
        reason = str(envelope["omitted"])
        raise NoBody(f"no body was stored for this event: {OMITTED.get(reason, reason)}")
    key = keyring.find(team, str(envelope.get("kid")))
    if key is None:
        raise Shredded()
    try:
        nonce, sealed = base64.b64decode(envelope["nonce"]), base64.b64decode(envelope["ct"])
        plaintext = key.aead.decrypt(nonce, sealed, _aad(event_id, team))
    except (KeyError, TypeError, ValueError, binascii.Error, InvalidTag):
        raise Unreadable("the body does not authenticate: it was altered, or copied from another event") from None
    document: dict[str, Any] = codec.loads(plaintext)
    return document


def readable(document: dict[str, Any]) -> dict[str, Any]:
    """The document with its request and answer shown as JSON values where they are whole JSON texts."""
    shown = dict(document)
    for name in ("request", "answer"):
        if isinstance(shown.get(name), str):
            try:
                shown[name] = codec.loads(shown[name])
            except codec.JSONDecodeError:
                pass  # cut, or not JSON: kept as text
    return shown


def _envelope(body: str) -> dict[str, Any]:
    try:
        envelope = codec.loads(body)
    except codec.JSONDecodeError:
        envelope = None
    if not isinstance(envelope, dict) or envelope.get("v") != VERSION:
        raise Unreadable("the body column does not hold a body envelope this gateway reads (v1)")
    return envelope


def _aad(event_id: str, team: str) -> bytes:
    return codec.dumps(["gateway-audit-body", VERSION, event_id, team])


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
