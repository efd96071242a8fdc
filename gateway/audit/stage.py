"""The audit trail's part of the pipeline: one event per request, appended to the local spool.

AuditAdmission  first stage: with the spool over its disk budget and `on_spool_full: fail_closed`, refuse
                the request (503 audit_unavailable) rather than serve it unrecorded
KeepAnswer      with `audit.bodies`, right after Forward (and MaskAnswer): keeps the upstream's answer (a
                stream's texts as they pass), before RestorePii puts the real values back
Audit           final stage: runs once however the request ends (served, refused, failed, abandoned),
                builds the event (its body sealed, with `audit.bodies`) and appends it to the spool: a plain
                write, never an fsync, never a network call; the spool's thread fsyncs in groups and the
                shipper process does the rest
"""

import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator

from gateway import codec
from gateway.audit import event
from gateway.audit.bodies import Bodies, KeptAnswer, keep_stream
from gateway.audit.spool import SpoolFull, SpoolWriter
from gateway.errors import AuditUnavailable
from gateway.pipeline import RequestContext

log = logging.getLogger("gateway.audit")


class AuditAdmission:
    def __init__(self, writer: SpoolWriter, fail_open: bool) -> None:
        self.writer = writer
        self.fail_open = fail_open

    async def __call__(self, ctx: RequestContext) -> None:
        if not self.fail_open and self.writer.full:
            raise AuditUnavailable("The audit trail cannot record requests right now (its spool is full).")


class KeepAnswer:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes

    async def __call__(self, ctx: RequestContext) -> None:
        result = ctx.result
        if result is None:
            return
        kept = ctx.kept_answer = KeptAnswer(self.max_bytes)
        if isinstance(result.body, bytes):
            kept.body = result.body
        else:
            result.body = keep_stream(ctx.endpoint, kept, result.body)


class TapStream:
    def __init__(self, salt: bytes) -> None:
        self.salt = salt

    async def __call__(self, ctx: RequestContext) -> None:
        result = ctx.result
        if result is not None and not isinstance(result.body, bytes):
            result.body = self._tap(ctx, result.body)

    async def _tap(self, ctx: RequestContext, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        digest = hmac.new(self.salt, digestmod=hashlib.sha256)
        try:
            async for chunk in chunks:
                if ctx.ttft_ms is None:
                    ctx.ttft_ms = (time.perf_counter() - ctx.started) * 1000
                digest.update(chunk)
                if b'"usage":{' in chunk:
                    ctx.stream_usage = _usage_of(chunk) or ctx.stream_usage
                yield chunk
        finally:
            ctx.answer_digest = digest.hexdigest()


def _usage_of(chunk: bytes) -> dict[str, object] | None:
    """The usage object of the SSE event(s) in `chunk` that carry one (chat, completions, Responses)."""
    for line in chunk.split(b"\n"):
        if b'"usage":{' not in line or not line.startswith(b"data:"):
            continue
        try:
            event = codec.loads(line[5:])
        except codec.JSONDecodeError:
            continue
        holder = event.get("response", event) if isinstance(event, dict) else None
        usage = holder.get("usage") if isinstance(holder, dict) else None
        if isinstance(usage, dict):
            return usage
    return None


class Audit:
    def __init__(self, writer: SpoolWriter, salt: bytes, bodies: Bodies | None = None) -> None:
        self.writer = writer
        self.salt = salt
        self.bodies = bodies
        self.lost = 0

    async def __call__(self, ctx: RequestContext) -> None:
        self.record(ctx)

    def record(self, ctx: RequestContext) -> None:
        record = codec.dumps(event.build(ctx, self.salt, self.bodies))
        try:
            self.writer.append(record)
        except SpoolFull:
            self.lost += 1
            log.error("audit spool full: the event of request %s is lost (%d lost so far)", ctx.request_id, self.lost)
