"""HTTP routes, kept thin: build a RequestContext, run the pipeline, turn its Result into a response.

POST /v1/chat/completions · /v1/completions · /v1/embeddings · /v1/responses   → the pipeline
GET  /v1/models · /v1/models/{model}   the models this key may use
GET  /v1/gateway/usage[?model=M]       this key's rate limits and budgets: used, remaining, reset
GET  /healthz (process up) · /readyz (backends ready) · /openapi.json (what we serve)
GET  /metrics                          Prometheus text format, with `telemetry.prometheus` (gateway.telemetry)
"""

import logging
from typing import TYPE_CHECKING

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway import codec
from gateway.auth.stage import authenticate
from gateway.errors import GatewayError, InternalError, NotFound
from gateway.limits import usage
from gateway.middleware import send_error
from gateway.pipeline import RequestContext, Result
from gateway.settings import ModelConfig

if TYPE_CHECKING:
    from gateway.app import Gateway

log = logging.getLogger("gateway")
STREAM_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
PROXIED_ENDPOINTS = ("chat/completions", "completions", "embeddings", "responses")
PROXIED = tuple(f"/v1/{endpoint}" for endpoint in PROXIED_ENDPOINTS)


def json_response(data: object, status: int = 200) -> Response:
    return Response(codec.dumps(data), status, media_type="application/json")


def bearer(headers: Headers) -> str | None:
    """The client's key: `Authorization: Bearer KEY`, or Azure-style `api-key: KEY`."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("api-key") or None


def _gateway(request: Request) -> "Gateway":
    return request.app.state.gateway  # type: ignore[no-any-return]


class Proxy:
    """The ASGI endpoint of a proxied route: the hot path, so no Request object and no exception round trip."""

    def __init__(self, endpoint: str, gateway: "Gateway") -> None:
        self.endpoint = endpoint
        self.pipeline = gateway.pipeline

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        state = scope["state"]
        ctx = RequestContext(state["request_id"], self.endpoint, headers, state["body"], {}, bearer(headers))
        client = scope.get("client")
        ctx.client = client[0] if client else ""
        try:
            result = await self.pipeline(ctx)
        except GatewayError as exc:
            await send_error(send, exc)
            return
        except Exception as exc:  # a bug: logged with its details, answered without them
            await send_error(send, internal_error(ctx.request_id, exc))
            return
        await to_response(result)(scope, receive, send)


def internal_error(request_id: str, exc: Exception) -> InternalError:
    """Log an unexpected exception with its details; the client gets only the request id."""
    log.error("request %s failed: %s", request_id, exc, exc_info=exc)
    return InternalError(f"The gateway failed to handle this request (request id {request_id}).")


def to_response(result: Result) -> Response:
    if isinstance(result.body, bytes):
        return Response(result.body, result.status, result.headers)
    return StreamingResponse(result.body, result.status, {**STREAM_HEADERS, **result.headers})


def model_card(model: ModelConfig) -> dict[str, object]:
    return {"id": model.name, "object": "model", "created": 0, "owned_by": model.deployments[0].provider}


async def list_models(request: Request) -> Response:
    gateway = _gateway(request)
    principal = authenticate(gateway.keys, bearer(request.headers))
    cards = [model_card(m) for m in gateway.models.visible(principal)]
    return json_response({"object": "list", "data": cards})


async def retrieve_model(request: Request) -> Response:
    gateway = _gateway(request)
    principal = authenticate(gateway.keys, bearer(request.headers))
    name = request.path_params["model"]
    for model in gateway.models.visible(principal):
        if model.name == name:
            return json_response(model_card(model))
    raise NotFound(f"The model '{name}' does not exist.", param="model", code="model_not_found")


async def key_usage(request: Request) -> Response:
    gateway = _gateway(request)
    principal = authenticate(gateway.keys, bearer(request.headers))
    models = gateway.models.visible(principal)
    wanted = request.query_params.get("model")
    if wanted is not None:
        models = [m for m in models if m.name == wanted]
        if not models:
            raise NotFound(f"The model '{wanted}' does not exist.", param="model", code="model_not_found")
    if gateway.limits is None or gateway.policies is None:
        body: dict[str, object] = {"object": "gateway.usage", "limits": [], "budgets": []}
        body["key"] = {"id": principal.key_id, "name": principal.name, "team": principal.team}
        return json_response(body)
    policies = gateway.policies.current
    return json_response(await usage.report(gateway.limits, policies, gateway.settings.limits, principal, models))


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    gateway = _gateway(request)
    checks = gateway.readiness()
    ready = all(value == "ok" for value in checks.values())
    body = {"status": "ready" if ready else "not_ready", "checks": checks, **gateway.details()}
    return json_response(body, 200 if ready else 503)


async def openapi(request: Request) -> Response:
    return Response(_gateway(request).openapi, media_type="application/json")


def routes(gateway: "Gateway") -> list[Route]:
    proxied = [Route(f"/v1/{endpoint}", Proxy(endpoint, gateway), methods=["POST"]) for endpoint in PROXIED_ENDPOINTS]
    return [
        *proxied,
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", retrieve_model, methods=["GET"]),
        Route("/v1/gateway/usage", key_usage, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        *(gateway.telemetry.routes() if gateway.telemetry is not None else []),
    ]
