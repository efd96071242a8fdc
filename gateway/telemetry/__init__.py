"""OpenTelemetry traces and metrics (GenAI semantic conventions), over OTLP/HTTP and at a Prometheus /metrics.

Settings: the `telemetry:` section of gateway.yaml (gateway.settings.TelemetrySettings). With everything off,
which is the default, the gateway imports none of this package and builds nothing of it: the plain
Pipeline, no middleware, no wrapper per stage, and one `is None` test per upstream attempt.
With several workers (`gateway serve --workers N`) each worker exports its own spans and metrics over OTLP,
told apart by `service.instance.id` (host-pid), for the collector or the backend to add up; /metrics adds
them up itself (prometheus_client's multiprocess mode, see prometheus.py).

    spans.py       the server span (pure ASGI middleware) and a span per pipeline stage; the trace map
    upstream.py    a CLIENT span per upstream attempt, the W3C traceparent on its request, the stream tap
    metrics.py     the metric table, what a request adds to it, and the OTLP instruments
    prometheus.py  GET /metrics (prometheus_client; multiprocess mode with several workers)
    observed.py    the ObservedPipeline and Conclude, the one place a request's telemetry is recorded
    record.py      what is kept about a request while it runs (ctx.telemetry)
    names.py       attribute names (HTTP and GenAI semantic conventions, the gateway's own)
    service.py     Telemetry: providers, exporters, and the parts the gateway plugs in
"""

from gateway.telemetry.service import Telemetry

__all__ = ["Telemetry"]
