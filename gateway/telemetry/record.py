"""What telemetry keeps about one request while it runs: `ctx.telemetry`, set by the ObservedPipeline."""

from dataclasses import dataclass, field

from opentelemetry.context import Context
from opentelemetry.trace import Span

from gateway.pipeline import RequestContext
from gateway.settings import Deployment


@dataclass(slots=True)
class Attempt:
    """One upstream attempt: when it started, how long it took, how it ended (error_type "" if it answered < 400)."""

    deployment: Deployment
    started: float
    number: int
    span: Span | None = None
    seconds: float | None = None
    status: int = 0
    error_type: str = ""


@dataclass(slots=True)
class RequestRecord:
    """`parent`: the context of the request's server span (None without tracing), `sampled` whether that span
    is recorded (if not, no span is made for the stages and attempts); `stage`: the context of the span of the
    stage running now, the parent of upstream attempt spans. A stream's first chunk sets the rest."""

    parent: Context | None
    sampled: bool = False
    stage: Context | None = None
    attempts: list[Attempt] = field(default_factory=list)
    streaming: Attempt | None = None
    first_chunk: float | None = None
    response_model: str = ""
    response_id: str = ""
    finish_reasons: list[str] = field(default_factory=list)


def record_of(ctx: RequestContext) -> RequestRecord:
    record = ctx.telemetry
    assert isinstance(record, RequestRecord), "telemetry stages run only in an ObservedPipeline"
    return record
