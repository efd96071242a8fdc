"""The metrics of the gateway: what is measured (one table), what one request adds (`observations`, called
once per request by Conclude), and the OTLP exporter's instruments.

    OpenTelemetry name / Prometheus name                  kind       attributes (Prometheus: `.` → `_`)
    gateway.requests                                      counter    gateway.route, gen_ai.operation.name,
      gateway_requests_total                                         gen_ai.request.model, http.response.status_code,
                                                                     gateway.team
    gen_ai.server.request.duration (s)                    histogram  the same
      gen_ai_server_request_duration_seconds
    gen_ai.server.time_to_first_token (s)                 histogram  operation, model, team (streams answered 200)
      gen_ai_server_time_to_first_token_seconds
    gen_ai.client.token.usage                             histogram  operation, gen_ai.provider.name, model (the
      gen_ai_client_token_usage                                      upstream's), gen_ai.token.type, team
    gen_ai.client.operation.duration (s)                  histogram  operation, provider, model (the upstream's),
      gen_ai_client_operation_duration_seconds                       gateway.deployment, error.type; per attempt
    gateway.cost (micro-USD)                              counter    model, team
      gateway_cost_micro_usd_total
    gateway.policy.decisions                              counter    gateway.policy, gateway.rule, gateway.rule.kind,
      gateway_policy_decisions_total                                 gateway.action (block, warn, shadow, redact),
                                                                     gateway.rule.where (input, output)
    gateway.pii.detections (entities found)               counter    gateway.pii.entity, gateway.action (block, mask,
      gateway_pii_detections_total                                   hash, pseudonymise)
    gateway.upstream.errors                               counter    provider, deployment, error.type; per failed
      gateway_upstream_errors_total                                  attempt (status code, or the gateway's error code)
    gateway.audit.spool_bytes / gateway_audit_spool_bytes           gauge     the spool's size, read when collected
    gateway.audit.spool_segments / gateway_audit_spool_segments     gauge     segment files not shipped yet
    gateway.audit.lost_events / gateway_audit_lost_events_total     counter   events the full spool refused

The model of the server-side metrics is the name clients use (as configured; "" for a request whose model did
not resolve), that of the client-side ones (gen_ai.client.*) the upstream's name for it, as the GenAI
conventions define each. The status is the one the client got: a started stream is a 200; 499 if the client
left before any answer.
"""

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from gateway.audit import spool as spool_files
from gateway.audit.spool import SpoolWriter
from gateway.audit.stage import Audit
from gateway.pipeline import RequestContext
from gateway.telemetry import names
from gateway.telemetry.record import RequestRecord

SECONDS = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
FIRST_TOKEN = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TOKENS = tuple(float(4**power) for power in range(14))  # 1, 4, 16 ... 67108864: the conventions' buckets


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    kind: Literal["counter", "histogram"]
    unit: str
    description: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()
    prometheus_name: str = ""  # without `_total`; by default the name with `_` for `.`, and `_seconds` for s

    @property
    def prometheus(self) -> str:
        base = self.prometheus_name or self.name.replace(".", "_")
        return base + "_seconds" if self.unit == "s" else base


REQUEST_LABELS = (names.ROUTE, names.OPERATION, names.REQUEST_MODEL, names.HTTP_STATUS, names.TEAM)
REQUESTS = Metric("gateway.requests", "counter", "{request}", "Model requests answered.", REQUEST_LABELS)
DURATION = Metric(
    "gen_ai.server.request.duration", "histogram", "s", "Time to the last byte of the answer.", REQUEST_LABELS, SECONDS
)
FIRST = Metric(
    "gen_ai.server.time_to_first_token",
    "histogram",
    "s",
    "Time to a stream's first chunk.",
    (names.OPERATION, names.REQUEST_MODEL, names.TEAM),
    FIRST_TOKEN,
)
TOKEN_USAGE = Metric(
    "gen_ai.client.token.usage",
    "histogram",
    "{token}",
    "Input and output tokens of the upstream answers.",
    (names.OPERATION, names.PROVIDER, names.REQUEST_MODEL, names.TOKEN_TYPE, names.TEAM),
    TOKENS,
)
UPSTREAM_DURATION = Metric(
    "gen_ai.client.operation.duration",
    "histogram",
    "s",
    "Duration of each upstream attempt.",
    (names.OPERATION, names.PROVIDER, names.REQUEST_MODEL, names.DEPLOYMENT, names.ERROR_TYPE),
    SECONDS,
)
COST = Metric(
    "gateway.cost",
    "counter",
    "{micro_usd}",
    "Cost in micro-USD.",
    (names.REQUEST_MODEL, names.TEAM),
    prometheus_name="gateway_cost_micro_usd",
)
DECISIONS = Metric(
    "gateway.policy.decisions",
    "counter",
    "{decision}",
    "Policy rules that fired.",
    (names.POLICY, names.RULE, names.RULE_KIND, names.ACTION, names.WHERE),
)
PII = Metric("gateway.pii.detections", "counter", "{entity}", "Personal data found.", (names.PII_ENTITY, names.ACTION))
UPSTREAM_ERRORS = Metric(
    "gateway.upstream.errors",
    "counter",
    "{error}",
    "Upstream attempts that failed.",
    (names.PROVIDER, names.DEPLOYMENT, names.ERROR_TYPE),
)
METRICS = (REQUESTS, DURATION, FIRST, TOKEN_USAGE, UPSTREAM_DURATION, COST, DECISIONS, PII, UPSTREAM_ERRORS)
AUDIT_SPOOL_BYTES = "gateway.audit.spool_bytes"
AUDIT_SPOOL_SEGMENTS = "gateway.audit.spool_segments"
AUDIT_LOST_EVENTS = "gateway.audit.lost_events"

Measured = tuple[Metric, float, dict[str, Any]]


def observations(ctx: RequestContext, record: RequestRecord) -> list[Measured]:
    """Everything one finished request adds to the metrics."""
    operation = names.operation(ctx.endpoint)
    team = ctx.principal.team if ctx.principal is not None else ""
    model = ctx.model.name if ctx.model is not None else ""
    status = status_of(ctx)
    request = {
        names.ROUTE: ctx.endpoint,
        names.OPERATION: operation,
        names.REQUEST_MODEL: model,
        names.HTTP_STATUS: status,
        names.TEAM: team,
    }
    found: list[Measured] = [(REQUESTS, 1, request), (DURATION, time.perf_counter() - ctx.started, request)]
    if record.first_chunk is not None and status == 200:
        first = {names.OPERATION: operation, names.REQUEST_MODEL: model, names.TEAM: team}
        found.append((FIRST, record.first_chunk - ctx.started, first))
    found.extend(_attempts(operation, record))
    found.extend(_usage(ctx, operation, team))
    for d in ctx.decisions:
        decision = {names.POLICY: d.policy, names.RULE: d.rule, names.RULE_KIND: d.kind, names.ACTION: d.action}
        decision[names.WHERE] = d.where
        found.append((DECISIONS, 1, decision))
    for item in ctx.pii:
        found.append((PII, item["count"], {names.PII_ENTITY: item["entity"], names.ACTION: item["action"]}))
    return found


def _attempts(operation: str, record: RequestRecord) -> Iterable[Measured]:
    for attempt in record.attempts:
        if attempt.seconds is None:
            continue
        deployment = attempt.deployment
        provider = names.provider(deployment)
        attributes = {
            names.OPERATION: operation,
            names.PROVIDER: provider,
            names.REQUEST_MODEL: deployment.upstream_model,
            names.DEPLOYMENT: deployment.label,
            names.ERROR_TYPE: attempt.error_type,
        }
        yield UPSTREAM_DURATION, attempt.seconds, attributes
        if attempt.error_type and attempt.error_type != "cancelled":
            errors = {
                names.PROVIDER: provider,
                names.DEPLOYMENT: deployment.label,
                names.ERROR_TYPE: attempt.error_type,
            }
            yield UPSTREAM_ERRORS, 1, errors


def _usage(ctx: RequestContext, operation: str, team: str) -> Iterable[Measured]:
    usage, deployment = ctx.usage, ctx.deployment
    if usage is None or deployment is None:
        return
    common = {
        names.OPERATION: operation,
        names.PROVIDER: names.provider(deployment),
        names.REQUEST_MODEL: deployment.upstream_model,
        names.TEAM: team,
    }
    yield TOKEN_USAGE, usage.input_tokens, {**common, names.TOKEN_TYPE: "input"}
    yield TOKEN_USAGE, usage.output_tokens, {**common, names.TOKEN_TYPE: "output"}
    if ctx.cost_micro_usd:
        model = ctx.model.name if ctx.model is not None else ""
        yield COST, ctx.cost_micro_usd, {names.REQUEST_MODEL: model, names.TEAM: team}


def status_of(ctx: RequestContext) -> int:
    """What the client got: a started stream is a 200; 499 when it left before any answer."""
    result, error = ctx.result, ctx.error
    if result is not None and not isinstance(result.body, bytes) and result.status == 200:
        return 200
    if error is not None:
        return error.status
    if result is not None:
        return result.status
    return 499 if ctx.client_disconnected else 0


class AuditNumbers:
    """The audit spool as metrics, read when they are collected: its size, its segments, the events it lost."""

    def __init__(self, writer: SpoolWriter, audit: Audit, directory: Path) -> None:
        self.writer = writer
        self.audit = audit
        self.directory = directory

    def spool_bytes(self) -> int:
        return int(self.writer.stats()["spool_bytes"])

    def spool_segments(self) -> int:
        suffixes = (spool_files.OPEN, spool_files.SEALED)
        return sum(1 for path in self.directory.iterdir() if path.suffix in suffixes)

    def lost_events(self) -> int:
        return self.audit.lost


class OtlpMetrics:
    """The metrics as OpenTelemetry instruments, exported by the meter's reader (OTLP)."""

    def __init__(self, meter: Meter, audit: AuditNumbers | None) -> None:
        self.record: dict[Metric, Callable[[float, dict[str, Any]], None]] = {}
        for metric in METRICS:
            if metric.kind == "counter":
                counter = meter.create_counter(metric.name, metric.unit, metric.description)
                self.record[metric] = counter.add
            else:
                histogram = meter.create_histogram(
                    metric.name, metric.unit, metric.description, explicit_bucket_boundaries_advisory=metric.buckets
                )
                self.record[metric] = histogram.record
        if audit is not None:
            _observe_audit(meter, audit)

    def take(self, observations: Sequence[Measured]) -> None:
        record = self.record
        for metric, value, attributes in observations:
            record[metric](value, attributes)


def _observe_audit(meter: Meter, audit: AuditNumbers) -> None:
    def reading(read: Callable[[], int]) -> Callable[[CallbackOptions], Iterable[Observation]]:
        return lambda options: [Observation(read())]

    meter.create_observable_gauge(
        AUDIT_SPOOL_BYTES, [reading(audit.spool_bytes)], "By", "Size of the audit spool directory."
    )
    meter.create_observable_gauge(
        AUDIT_SPOOL_SEGMENTS, [reading(audit.spool_segments)], "{segment}", "Audit spool segments not shipped yet."
    )
    meter.create_observable_counter(
        AUDIT_LOST_EVENTS, [reading(audit.lost_events)], "{event}", "Audit events the full spool refused."
    )
