"""The pipeline telemetry runs when it is on (the gateway builds the plain Pipeline when it is off).

ObservedPipeline  the Pipeline with `ctx.telemetry` set to a RequestRecord before the first stage, each stage
                  and final stage in its span (with tracing), a StreamTap after the last stage, and Conclude
                  after the last final stage
Conclude          the one place a request's telemetry is written, once the request is over (client gone
                  included): a stream's attempt span whose close never came is ended, the server span gets
                  the request's governance attributes, and every metric of the request is recorded
"""

import logging
from collections.abc import Sequence
from typing import Protocol

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Tracer

from gateway.pipeline import Pipeline, RequestContext, Result, Stage
from gateway.telemetry import metrics, spans, upstream
from gateway.telemetry.record import RequestRecord, record_of

log = logging.getLogger("gateway.telemetry")


class Sink(Protocol):
    def take(self, observations: Sequence[metrics.Measured]) -> None: ...


class ObservedPipeline(Pipeline):
    def __init__(
        self, stages: Sequence[Stage], final_stages: Sequence[Stage], tracer: Tracer | None, conclude: Stage
    ) -> None:
        if tracer is not None:
            stages = [spans.TracedStage(stage, tracer) for stage in stages]
            final_stages = [spans.TracedStage(stage, tracer) for stage in final_stages]
        super().__init__([*stages, upstream.StreamTap()], [*final_stages, conclude])
        self.traced = tracer is not None

    async def __call__(self, ctx: RequestContext) -> Result:
        if self.traced:
            parent = otel_context.get_current()
            sampled = trace.get_current_span(parent).get_span_context().trace_flags.sampled
            ctx.telemetry = RequestRecord(parent, sampled)
        else:
            ctx.telemetry = RequestRecord(None)
        return await super().__call__(ctx)


class Conclude:
    def __init__(self, sinks: Sequence[Sink]) -> None:
        self.sinks = tuple(sinks)

    async def __call__(self, ctx: RequestContext) -> None:
        try:
            record = record_of(ctx)
            if record.streaming is not None:
                upstream.finish_stream(ctx, record, record.streaming)
            if record.parent is not None:
                spans.annotate(trace.get_current_span(record.parent), ctx)
            if self.sinks:
                observed = metrics.observations(ctx, record)
                for sink in self.sinks:
                    sink.take(observed)
        except Exception:  # telemetry never fails a request
            log.exception("the telemetry of request %s could not be recorded", ctx.request_id)
