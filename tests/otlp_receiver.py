"""A loopback OTLP/HTTP receiver for the tests: what a collector would get from the gateway, decoded.

It accepts `POST /v1/traces` and `POST /v1/metrics` (protobuf bodies, gzip or not), decodes them with the
`opentelemetry-proto` messages (ExportTraceServiceRequest, ExportMetricsServiceRequest) and keeps the spans
and the latest data points of every metric (the gateway exports cumulative values, so the latest are totals).
"""

import gzip
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

SERVER, CLIENT, INTERNAL = Span.SPAN_KIND_SERVER, Span.SPAN_KIND_CLIENT, Span.SPAN_KIND_INTERNAL
ERROR = Status.STATUS_CODE_ERROR
T = TypeVar("T")


@dataclass(frozen=True)
class ReceivedSpan:
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: int
    attributes: dict[str, Any]
    status: int
    start: int
    end: int
    resource: dict[str, Any]


@dataclass(frozen=True)
class Point:
    """One data point: `value` for sums and gauges, `count`/`sum` for histograms."""

    metric: str
    attributes: dict[str, Any]
    value: float | None = None
    count: int | None = None
    sum: float | None = None


def value_of(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [value_of(item) for item in value.array_value.values]
    return getattr(value, kind) if kind else None


def attributes_of(pairs: Iterator[KeyValue]) -> dict[str, Any]:
    return {pair.key: value_of(pair.value) for pair in pairs}


class OtlpReceiver:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: list[ReceivedSpan] = []
        self.points: dict[str, list[Point]] = {}
        self.metric_exports = 0
        self.paths: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, name="otlp-receiver", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "OtlpReceiver":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def spans(self) -> list[ReceivedSpan]:
        with self.lock:
            return list(self.received)

    def metric(self, name: str) -> list[Point]:
        with self.lock:
            return list(self.points.get(name, []))

    def settle_metrics(self, exports: int = 2) -> None:
        """Wait for `exports` more metric exports: whatever was recorded before this call is in the last one."""
        with self.lock:
            target = self.metric_exports + exports
        self.wait(lambda: self.metric_exports >= target)

    def wait(self, found: Callable[[], T | None], timeout: float = 10.0) -> T:
        """Poll `found` until it returns something truthy (exports arrive in batches, every few tenths of a second)."""
        deadline = time.monotonic() + timeout
        while True:
            result = found()
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"the receiver did not get it within {timeout} s (paths seen: {self.paths[-5:]})")
            time.sleep(0.05)

    def _take_traces(self, body: bytes) -> bytes:
        request = ExportTraceServiceRequest.FromString(body)
        spans = []
        for resource_spans in request.resource_spans:
            resource = attributes_of(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                spans.extend(_span(span, resource) for span in scope_spans.spans)
        with self.lock:
            self.received.extend(spans)
        return ExportTraceServiceResponse().SerializeToString()

    def _take_metrics(self, body: bytes) -> bytes:
        request = ExportMetricsServiceRequest.FromString(body)
        latest: dict[str, list[Point]] = {}
        for resource_metrics in request.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    latest.setdefault(metric.name, []).extend(_points(metric))
        with self.lock:
            self.points.update(latest)
            self.metric_exports += 1
        return ExportMetricsServiceResponse().SerializeToString()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self
        takers = {"/v1/traces": receiver._take_traces, "/v1/metrics": receiver._take_metrics}

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                take = takers.get(self.path)
                with receiver.lock:
                    receiver.paths.append(self.path)
                if take is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                answer = take(body)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler


def _span(span: Span, resource: dict[str, Any]) -> ReceivedSpan:
    return ReceivedSpan(
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_id=span.parent_span_id.hex(),
        name=span.name,
        kind=span.kind,
        attributes=attributes_of(span.attributes),
        status=span.status.code,
        start=span.start_time_unix_nano,
        end=span.end_time_unix_nano,
        resource=resource,
    )


def _points(metric: Any) -> Iterator[Point]:
    kind = metric.WhichOneof("data")
    data = getattr(metric, kind)
    for point in data.data_points:
        attributes = attributes_of(point.attributes)
        if kind == "histogram":
            yield Point(metric.name, attributes, count=point.count, sum=point.sum)
        else:
            number = point.as_int if point.WhichOneof("value") == "as_int" else point.as_double
            yield Point(metric.name, attributes, value=number)
