"""One Telemetry per worker process: the tracer and meter providers, their exporters, and the parts the gateway
plugs in where telemetry is on (the gateway builds none of it when it is off)."""

import os
import socket
from collections.abc import Sequence

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Tracer
from starlette.routing import Route
from starlette.types import ASGIApp

from gateway import __version__
from gateway.pipeline import Pipeline, Stage
from gateway.settings import TelemetrySettings
from gateway.telemetry.metrics import AuditNumbers, OtlpMetrics
from gateway.telemetry.observed import Conclude, ObservedPipeline, Sink
from gateway.telemetry.prometheus import PrometheusMetrics
from gateway.telemetry.spans import ServerSpans
from gateway.telemetry.upstream import Attempts

EXPORT_TIMEOUT = 5.0  # seconds an OTLP export may take


class Telemetry:
    """`audit`: the audit spool's numbers, when there is an audit trail; `token`: the resolved prometheus_token."""

    def __init__(self, settings: TelemetrySettings, audit: AuditNumbers | None, token: str | None) -> None:
        self.settings = settings
        resource = Resource.create(
            {
                "service.name": settings.service_name,
                "service.version": __version__,
                "service.instance.id": f"{socket.gethostname()}-{os.getpid()}",
            }
        )
        self.tracer_provider: TracerProvider | None = None
        self.tracer: Tracer | None = None
        if settings.tracing:
            self.tracer_provider = _tracer_provider(settings, resource)
            self.tracer = self.tracer_provider.get_tracer("gateway", __version__)
        sinks: list[Sink] = []
        self.meter_provider: MeterProvider | None = None
        if settings.metrics:
            self.meter_provider = _meter_provider(settings, resource)
            sinks.append(OtlpMetrics(self.meter_provider.get_meter("gateway", __version__), audit))
        self.prometheus = PrometheusMetrics(audit, token) if settings.prometheus else None
        if self.prometheus is not None:
            sinks.append(self.prometheus)
        self.sinks = tuple(sinks)
        self.attempts = Attempts(self.tracer)

    def pipeline(self, stages: Sequence[Stage], final_stages: Sequence[Stage]) -> Pipeline:
        return ObservedPipeline(stages, final_stages, self.tracer, Conclude(self.sinks))

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """The server span of each request, when tracing; else the app itself."""
        return ServerSpans(app, self.tracer) if self.tracer is not None else app

    def routes(self) -> list[Route]:
        if self.prometheus is None:
            return []
        return [Route("/metrics", self.prometheus.endpoint, methods=["GET"])]

    def close(self) -> None:
        """Export what is left and stop the exporters' threads (blocks: at most a few seconds)."""
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown(timeout_millis=EXPORT_TIMEOUT * 1000)


def _tracer_provider(settings: TelemetrySettings, resource: Resource) -> TracerProvider:
    sampler = ParentBased(TraceIdRatioBased(settings.sample_ratio))
    provider = TracerProvider(sampler=sampler, resource=resource, shutdown_on_exit=False)
    exporter = OTLPSpanExporter(endpoint=f"{settings.otlp_endpoint}/v1/traces", timeout=EXPORT_TIMEOUT)
    delay = settings.traces_delay * 1000
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=delay))
    return provider


def _meter_provider(settings: TelemetrySettings, resource: Resource) -> MeterProvider:
    exporter = OTLPMetricExporter(endpoint=f"{settings.otlp_endpoint}/v1/metrics", timeout=EXPORT_TIMEOUT)
    interval = settings.metrics_interval * 1000
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=interval)
    return MeterProvider(metric_readers=[reader], resource=resource, shutdown_on_exit=False)
