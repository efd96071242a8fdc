"""GET /metrics: the metrics in Prometheus text format, kept by prometheus_client.

prometheus_client rather than the OpenTelemetry SDK's Prometheus reader: it measured cheaper per observation
(about 4.5 µs against 7 µs for a labelled counter add or histogram record), and its multiprocess mode makes
/metrics right with several workers. `gateway serve --workers N` points PROMETHEUS_MULTIPROC_DIR at a fresh
directory (gateway.server) before the workers start; each worker then writes its values to its own files there,
and whichever worker answers /metrics adds up every worker's (counters and histograms summed). With one process
the values stay in memory. The audit gauges are read from the spool directory when scraped (the same for every
worker); the lost-events counter is each worker's count, summed.

The endpoint is on the main port. It answers scrapers that send `Authorization: Bearer <prometheus_token>`
(compared in constant time), or anyone with `prometheus_public: true`; never by default.
"""

import asyncio
import hmac
import os
from collections.abc import Iterator, Sequence

from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import AuthenticationFailed
from gateway.telemetry.metrics import METRICS, AuditNumbers, Measured
from gateway.telemetry.metrics import Metric as Measure

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def label(name: str) -> str:
    return name.replace(".", "_")


class PrometheusMetrics:
    def __init__(self, audit: AuditNumbers | None, token: str | None) -> None:
        self.multiprocess = MULTIPROCESS_ENV in os.environ
        # multiprocess: the values live in files, collected anew at each scrape; else in this registry
        self.registry = None if self.multiprocess else CollectorRegistry()
        self.instruments = {metric: _instrument(metric, self.registry) for metric in METRICS}
        self.audit = audit
        self.lost = None
        self.lost_seen = 0
        if audit is not None:
            self.lost = Counter(
                "gateway_audit_lost_events", "Audit events the full spool refused.", registry=self.registry
            )
            if self.registry is not None:
                self.registry.register(AuditGauges(audit))
        self.token = token.encode() if token else None

    def take(self, observations: Sequence[Measured]) -> None:
        for metric, value, attributes in observations:
            child = self.instruments[metric].labels(*[str(attributes.get(name, "")) for name in metric.labels])
            if metric.kind == "counter":
                child.inc(value)  # type: ignore[union-attr]
            else:
                child.observe(value)  # type: ignore[union-attr]
        self.sync_lost()

    def sync_lost(self) -> None:
        """The audit stage counts lost events; the counter catches up with it at each request and scrape."""
        if self.audit is None or self.lost is None:
            return
        lost = self.audit.lost_events()
        if lost > self.lost_seen:
            self.lost.inc(lost - self.lost_seen)
            self.lost_seen = lost

    def render(self) -> bytes:
        """The text exposition (in a thread: with several workers it reads every worker's files)."""
        registry = self.registry
        if registry is None:
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            if self.audit is not None:
                registry.register(AuditGauges(self.audit))
        return generate_latest(registry)

    async def endpoint(self, request: Request) -> Response:
        if self.token is not None:
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token):
                raise AuthenticationFailed(
                    "GET /metrics needs the scraper's bearer token (telemetry.prometheus_token)."
                )
        self.sync_lost()  # here, on the event loop, like every other change of the counters
        body = await asyncio.to_thread(self.render)
        return Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4)


def _instrument(metric: Measure, registry: CollectorRegistry | None) -> Counter | Histogram:
    labels = [label(name) for name in metric.labels]
    if metric.kind == "counter":
        return Counter(metric.prometheus, metric.description, labels, registry=registry)
    return Histogram(metric.prometheus, metric.description, labels, registry=registry, buckets=metric.buckets)


class AuditGauges(Collector):
    def __init__(self, audit: AuditNumbers) -> None:
        self.audit = audit

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "gateway_audit_spool_bytes", "Size of the audit spool directory.", value=self.audit.spool_bytes()
        )
        yield GaugeMetricFamily(
            "gateway_audit_spool_segments", "Audit spool segments not shipped yet.", value=self.audit.spool_segments()
        )
