"""The spans of a request, but those of upstream attempts (gateway.telemetry.upstream):

    POST /v1/chat/completions            SERVER, from ServerSpans, pure ASGI middleware just inside RequestId;
     │                                   continues the client's trace when it sends a W3C `traceparent`
     ├── stage Authenticate              INTERNAL, one per pipeline stage (TracedStage), named after its class
     ├── stage ParseBody · stage ResolveModel · stage ResolvePolicy · stage CheckInput · stage Redact · ...
     ├── stage Forward
     │    ├── chat gpt-4o-mini           CLIENT, one per upstream attempt (retries and fallbacks included)
     │    └── chat gpt-4o-mini           its `traceparent` goes upstream, so a model server joins the trace
     ├── stage RestorePii · stage CheckOutput · stage Meter · stage TapStream
     └── stage Settle · stage Audit      final stages: also after errors and client disconnects

Server span attributes: HTTP semantic conventions (http.request.method, http.route, url.path, url.scheme,
server.address, server.port, client.address, network.protocol.version, user_agent.original,
http.response.status_code, error.type for 5xx), then, once the request is over (Conclude): gateway.request_id,
gateway.team, gateway.key_id, gen_ai.operation.name, gen_ai.request.model, gen_ai.usage.*,
gateway.cost.micro_usd, gateway.policy.revision, gateway.policy.decisions ("policy/rule:action"),
gateway.client_disconnected. Status ERROR only for a 5xx (a 4xx is the client's, as the conventions say).

A stage span that ends in a GatewayError gets error.type (its code); its status is ERROR only for a 5xx
error or an unexpected exception. /healthz, /readyz and /metrics are not traced. On a stream, a stage span
covers the stage's own work (setting up its part of the chain), not the stream, which the server span covers.
Sampling (`sample_ratio`, parent-based: a client's sampled or unsampled traceparent is followed) is decided
for the server span; a request left out gets no stage or attempt span at all, only its traceparent upstream.
"""

from collections.abc import Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import GatewayError
from gateway.pipeline import RequestContext, Stage
from gateway.telemetry import names
from gateway.telemetry.record import record_of

UNTRACED = frozenset({"/healthz", "/readyz", "/metrics"})
ROUTES = frozenset(
    {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/models", "/v1/gateway/usage"}
)


class ScopeHeaders(Getter[list[tuple[bytes, bytes]]]):
    """Reads propagation headers straight from the ASGI scope's header list."""

    def get(self, carrier: list[tuple[bytes, bytes]], key: str) -> list[str] | None:
        wanted = key.encode("latin-1")
        found = [value.decode("latin-1") for name, value in carrier if name == wanted]
        return found or None

    def keys(self, carrier: list[tuple[bytes, bytes]]) -> list[str]:
        return [name.decode("latin-1") for name, _ in carrier]


class ServerSpans:
    def __init__(self, app: ASGIApp, tracer: Tracer) -> None:
        self.app = app
        self.tracer = tracer
        self.propagator = TraceContextTextMapPropagator()
        self.getter = ScopeHeaders()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNTRACED:
            await self.app(scope, receive, send)
            return
        parent = self.propagator.extract(scope["headers"], getter=self.getter)
        name, attributes = server_attributes(scope)
        span = self.tracer.start_span(name, parent, SpanKind.SERVER, attributes)
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except BaseException as exc:
            status = status or 500
            span.set_attribute(names.ERROR_TYPE, type(exc).__qualname__)
            raise
        finally:
            _end_server_span(span, status)
            otel_context.detach(token)


def server_attributes(scope: Scope) -> tuple[str, dict[str, Any]]:
    method, path = scope["method"], scope["path"]
    route = path if path in ROUTES else "/v1/models/{model}" if path.startswith("/v1/models/") else None
    attributes: dict[str, Any] = {
        names.HTTP_METHOD: method,
        names.URL_PATH: path,
        names.URL_SCHEME: scope.get("scheme", "http"),
        names.PROTOCOL_VERSION: scope.get("http_version", "1.1"),
    }
    if route is not None:
        attributes[names.HTTP_ROUTE] = route
    server, client = scope.get("server"), scope.get("client")
    if server:
        attributes[names.SERVER_ADDRESS], attributes[names.SERVER_PORT] = server[0], server[1]
    if client:
        attributes[names.CLIENT_ADDRESS] = client[0]
    for header, value in scope["headers"]:
        if header == b"user-agent":
            attributes[names.USER_AGENT] = value.decode("latin-1")[:512]
    request_id = scope.get("state", {}).get("request_id")
    if request_id:
        attributes[names.REQUEST_ID] = request_id
    return (f"{method} {route}" if route else method), attributes


def _end_server_span(span: Span, status: int) -> None:
    if status:
        span.set_attribute(names.HTTP_STATUS, status)
    if status >= 500:
        span.set_attribute(names.ERROR_TYPE, str(status))
        span.set_status(Status(StatusCode.ERROR))
    span.end()


class TracedStage:
    """A stage in a span, child of the server span; upstream attempt spans find theirs in the record.
    Nothing but the stage runs for a request whose server span the sampler did not keep."""

    def __init__(self, stage: Stage, tracer: Tracer) -> None:
        self.stage = stage
        self.tracer = tracer
        self.name = f"stage {type(stage).__name__}"

    async def __call__(self, ctx: RequestContext) -> None:
        record = record_of(ctx)
        if not record.sampled:  # a request the sampler left out costs no span at all
            await self.stage(ctx)
            return
        span = self.tracer.start_span(self.name, record.parent)
        record.stage = trace.set_span_in_context(span, record.parent)
        try:
            await self.stage(ctx)
        except BaseException as exc:
            mark_error(span, exc)
            raise
        finally:
            span.end()


def mark_error(span: Span, exc: BaseException) -> None:
    """error.type on the span; status ERROR for a failure of the gateway's (5xx, a bug), not for a refusal."""
    if isinstance(exc, GatewayError):
        span.set_attribute(names.ERROR_TYPE, exc.code or exc.type)
        if exc.status >= 500:
            span.set_status(Status(StatusCode.ERROR, exc.message))
    elif isinstance(exc, Exception):
        span.set_attribute(names.ERROR_TYPE, type(exc).__qualname__)
        span.set_status(Status(StatusCode.ERROR))
    else:
        span.set_attribute(names.CLIENT_DISCONNECTED, True)


def annotate(span: Span, ctx: RequestContext) -> None:
    """The request's governance attributes on its server span, once the request is over."""
    if not span.is_recording():
        return
    attributes: dict[str, Any] = {names.REQUEST_ID: ctx.request_id, names.OPERATION: names.operation(ctx.endpoint)}
    if ctx.principal is not None:
        attributes[names.TEAM] = ctx.principal.team
        attributes[names.KEY_ID] = ctx.principal.key_id
    model = ctx.model.name if ctx.model is not None else ctx.body.get("model")
    if isinstance(model, str):
        attributes[names.REQUEST_MODEL] = model[:256]
    if ctx.usage is not None:
        attributes[names.INPUT_TOKENS] = ctx.usage.input_tokens
        attributes[names.OUTPUT_TOKENS] = ctx.usage.output_tokens
        attributes[names.COST] = ctx.cost_micro_usd
    if ctx.policy is not None:
        attributes[names.POLICY_REVISION] = ctx.policy.revision
    if ctx.decisions:
        attributes[names.DECISIONS] = decision_names(ctx)
    if ctx.error is not None:
        attributes[names.ERROR_TYPE] = ctx.error.code or ctx.error.type
    if ctx.client_disconnected:
        attributes[names.CLIENT_DISCONNECTED] = True
    span.set_attributes(attributes)


def decision_names(ctx: RequestContext) -> Sequence[str]:
    return [f"{d.policy}/{d.rule}:{d.action}" for d in ctx.decisions]
