"""The audit trail's part of the pipeline: one event per request, appended to the local spool.

AuditAdmission  first stage: with the spool over its disk budget and `on_spool_full: fail_closed`, refuse
                the request (503 audit_unavailable) rather than serve it unrecorded
Audit           final stage: runs once however the request ends (served, refused, failed, abandoned),
                builds the event and appends it to the spool: a plain write, never an fsync, never a
                network call; the spool's thread fsyncs in groups and the shipper process does the rest
"""

import logging

from gateway import codec
from gateway.audit import event
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


class Audit:
    def __init__(self, writer: SpoolWriter, salt: bytes) -> None:
        self.writer = writer
        self.salt = salt
        self.lost = 0

    async def __call__(self, ctx: RequestContext) -> None:
        record = codec.dumps(event.build(ctx, self.salt))
        try:
            self.writer.append(record)
        except SpoolFull:
            self.lost += 1
            log.error("audit spool full: the event of request %s is lost (%d lost so far)", ctx.request_id, self.lost)
