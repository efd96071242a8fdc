"""build_app(settings): the Starlette application, its middleware stack and the lifespan of its parts.

One `Gateway` per worker process holds everything a request needs: the key store, the model table, the
pooled upstream client and the pipeline. Nothing lives in module globals.
"""

import asyncio
import contextlib
import gc
import logging
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway import secrets
from gateway import settings as settings_module
from gateway.audit import event as audit_event
from gateway.audit.bodies import Bodies
from gateway.audit.keyring import Keyring, master_key
from gateway.audit.process import read_status
from gateway.audit.spool import SpoolWriter
from gateway.audit.stage import Audit, AuditAdmission, KeepAnswer, TapStream
from gateway.auth.keys import KeyStore
from gateway.auth.stage import Authenticate, authenticate
from gateway.errors import GatewayError, MethodNotAllowed, NotFound
from gateway.limits.alerts import Alerts
from gateway.limits.costs import Pricing
from gateway.limits.service import Limits
from gateway.limits.stage import Admit, AskUsage, Meter, Settle
from gateway.middleware import RequestIdMiddleware, RequestLimitsMiddleware
from gateway.parsing import ParseBody
from gateway.pii.conversations import Conversations
from gateway.pii.engine import PiiEngine, default_processes
from gateway.pii.stage import MaskAnswer, Redact, RestorePii
from gateway.pipeline import Pipeline, RequestContext, Stage
from gateway.policy.loader import PolicyStore
from gateway.policy.stages import CheckInput, CheckOutput, ResolvePolicy
from gateway.routes import PROXIED, bearer, internal_error, routes
from gateway.routing import ResolveModel
from gateway.settings import AuditSettings, Settings, TelemetrySettings
from gateway.upstream import health
from gateway.upstream.client import UpstreamClient
from gateway.upstream.router import Router
from gateway.upstream.stage import Forward

if TYPE_CHECKING:
    from gateway.telemetry import Telemetry

log = logging.getLogger("gateway")
KEYS_REFRESH_SECONDS = 1.0
OPENAPI = Path(__file__).with_name("openapi.json")


class Gateway:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.secrets = {
            deployment: secrets.resolve(deployment.api_key, f"models[{model.name}] deployment {deployment.label}")
            for model in settings.models
            for deployment in model.deployments
        }
        self.keys = KeyStore(settings.keys_path)
        self.models = ResolveModel(settings)
        self.client = UpstreamClient()
        self.router = Router()
        self.openapi = OPENAPI.read_bytes()
        directory = settings.policy_dir
        self.policies = PolicyStore(directory) if directory is not None else None
        if self.policies is None:
            log.warning("no policy directory configured (policies.dir): requests are not checked by any policy")
        self.spool: SpoolWriter | None = None
        self.audit: Audit | None = None
        self.tap: TapStream | None = None
        self.keep: KeepAnswer | None = None  # the upstream's answer, for the stored bodies
        self.pii_salt = b""  # keys the `hash` action: the audit salt, or pii.salt beside gateway.yaml
        if settings.audit is not None:
            self._build_audit(settings, settings.audit)
        self.pii: PiiEngine | None = None
        if self.policies is not None:  # pii rules come from policies; the pool starts when one needs it
            self._build_pii(settings)
        self.pricing = Pricing(settings)
        self.alerts = Alerts(self.client, settings.limits.webhook_url, self.audit.record if self.audit else None)
        # limits come from policies: without a policy directory there is nothing to count
        self.limits = Limits(settings.limits, self.alerts) if self.policies is not None else None
        self.conversations = self._conversations(settings) if self.pii is not None else None
        self.telemetry = self._telemetry(settings.telemetry) if _telemetry_on(settings) else None
        # usage and cost are worked out for the audit trail and telemetry too, not only for limits
        counted = self.audit is not None or self.telemetry is not None
        self.metered = self.policies is not None or counted
        final: list[Stage] = [Settle(self.limits, self.pricing, counted)] if self.metered else []
        final += [self.audit] if self.audit else []
        if self.telemetry is not None:
            self.pipeline = self.telemetry.pipeline(self.stages(), final)
        else:
            self.pipeline = Pipeline(stages=self.stages(), final_stages=final)

    def _build_audit(self, settings: Settings, audit: AuditSettings) -> None:
        self.spool_dir = settings.near(audit.spool_dir)
        self.spool = SpoolWriter(self.spool_dir, max_bytes=audit.max_spool_bytes, fsync_interval=audit.fsync_interval)
        salt = audit_event.load_or_create_salt(self.spool_dir / "audit.salt")
        bodies = None
        if audit.bodies:  # a missing master key stops the start, naming GATEWAY_MASTER_KEY
            bodies = Bodies(Keyring(settings.near(audit.body_keys), master_key()), audit.max_body_bytes)
            self.keep = KeepAnswer(audit.max_body_bytes)
        self.audit = Audit(self.spool, salt, bodies)
        self.tap = TapStream(salt)
        self.pii_salt = salt

    def _build_pii(self, settings: Settings) -> None:
        processes = settings.pii.processes or default_processes()
        self.pii = PiiEngine(settings.pii.spacy_model, processes, settings.pii.timeout, settings.pii.cache_entries)
        if not self.pii_salt:  # one salt for every worker and restart, so a hashed value keeps its tag
            self.pii_salt = audit_event.load_or_create_salt(settings.near("pii.salt"))

    def _telemetry(self, settings: TelemetrySettings) -> "Telemetry":
        from gateway.telemetry import Telemetry  # the OpenTelemetry SDK is imported only when telemetry is on
        from gateway.telemetry.metrics import AuditNumbers

        audit = AuditNumbers(self.spool, self.audit, self.spool_dir) if self.spool and self.audit else None
        token = secrets.resolve(settings.prometheus_token, "telemetry.prometheus_token")
        return Telemetry(settings, audit, token)

    def _conversations(self, settings: Settings) -> Conversations | None:
        """Conversation pseudonyms, kept where the limits are (Redis or the process), when a header names them."""
        if not settings.pii.conversation_header:
            return None
        redis = self.limits.redis.client if self.limits is not None and self.limits.redis is not None else None
        key = secrets.load_master_key()  # a missing key stops the start, naming GATEWAY_MASTER_KEY
        return Conversations(key, settings.pii.conversation_ttl, settings.limits.key_prefix, redis)

    def stages(self) -> list[Stage]:
        policy: list[Stage] = [ResolvePolicy(self.policies), CheckInput()] if self.policies else []
        if self.pii is not None:
            header = self.settings.pii.conversation_header or ""
            policy.append(Redact(self.pii, self.pii_salt, self.conversations, header))
        if self.limits is not None:
            policy.append(Admit(self.limits, self.pricing, self.settings.limits))
        output: list[Stage] = [CheckOutput()] if self.policies else []
        if self.metered:
            policy.append(AskUsage())
            output.append(Meter())
        admission: list[Stage] = []
        if self.spool is not None and self.settings.audit is not None:
            admission = [AuditAdmission(self.spool, self.settings.audit.on_spool_full == "fail_open")]
        attempts = self.telemetry.attempts if self.telemetry is not None else None
        return [
            *admission,
            Authenticate(self.keys),
            ParseBody(),
            self.models,
            *policy,
            Forward(self.client, self.router, self.secrets, self.models.models, attempts),
            *([MaskAnswer(self.pii, self.pii_salt, self.settings.pii.output_window)] if self.pii is not None else []),
            *([self.keep] if self.keep is not None else []),
            *([RestorePii()] if self.pii is not None else []),
            *output,
            *([self.tap] if self.tap is not None else []),
        ]

    def readiness(self) -> dict[str, str]:
        return {
            "upstream_client": "ok" if self.client.ready else "closed",
            "keys": "ok" if self.keys.path.exists() else f"no keys file at {self.keys.path}",
        }

    def details(self) -> dict[str, object]:
        """What /readyz shows beside the checks: the serving policy revision and the state of its reloads."""
        return {
            "policies": self.policies.status() if self.policies else None,
            "limits": self.limits.status() if self.limits else None,
            "pii": self.pii.status() if self.pii else None,
            "audit": self.audit_status(),
        }

    def audit_refused(self, scope: Scope, error: GatewayError) -> None:
        """An audit event for a model request the middleware refused (413, 431, 408) before any stage ran;
        attributed to its key when the key is valid."""
        if self.audit is None or scope.get("path") not in PROXIED:
            return
        headers = Headers(scope=scope)
        endpoint = str(scope["path"]).removeprefix("/v1/")
        ctx = RequestContext(scope["state"]["request_id"], endpoint, headers, b"", {}, bearer(headers))
        client = scope.get("client")
        ctx.client = client[0] if client else ""
        ctx.error = error
        with contextlib.suppress(GatewayError):
            ctx.principal = authenticate(self.keys, ctx.api_key)
        self.audit.record(ctx)

    def audit_status(self) -> dict[str, object] | None:
        if self.spool is None or self.audit is None:
            return None
        return {"spool": self.spool.stats(), "lost": self.audit.lost, "shipper": read_status(self.spool_dir)}

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        await self.client.start()
        if self.spool is not None:
            self.spool.start()
        tasks = [
            asyncio.create_task(self._refresh_keys()),
            asyncio.create_task(health.run(self.client, self.router, self.settings, self.secrets)),
        ]
        if self.limits is not None:
            tasks.append(asyncio.create_task(self.limits.run()))
        if self.pii is not None and self.policies is not None and _has_pii_rules(self.policies):
            tasks.append(asyncio.create_task(self.pii.ensure_started()))  # warm the pool up before traffic
        if self.policies is not None and self.settings.policies is not None:
            tasks.append(asyncio.create_task(self.policies.watch(self.settings.policies.reload_interval)))
            with contextlib.suppress(NotImplementedError, RuntimeError):  # no signals off the main thread
                asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.policies.on_sighup)
        try:
            yield
        finally:
            if self.limits is not None:
                await self.limits.drain(5.0)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.alerts.close()
            if self.pii is not None:
                self.pii.close()
            if self.limits is not None:
                await self.limits.close()
            await self.client.close()
            if self.spool is not None:
                self.spool.close()
            if self.telemetry is not None:
                await asyncio.to_thread(self.telemetry.close)  # the last spans and metrics go out

    async def _refresh_keys(self) -> None:
        while True:
            await asyncio.sleep(KEYS_REFRESH_SECONDS)
            try:
                if self.keys.refresh():
                    log.info("keys file reloaded: %d keys", len(self.keys.records()))
            except Exception:  # a half-written or broken file: keep the keys we have
                log.exception("keys file %s could not be read; keeping the previous keys", self.keys.path)


def _telemetry_on(settings: Settings) -> bool:
    telemetry = settings.telemetry
    return telemetry.tracing or telemetry.metrics or telemetry.prometheus


def _has_pii_rules(policies: PolicyStore) -> bool:
    return any(rule.kind == "pii" for item in policies.current.loaded for rule in item.policy.rules)


def build_middleware_stack(settings: Settings, app: Starlette) -> ASGIApp:
    """The one place the stack is built, outermost first:

    RequestId → [ServerSpans] → RequestLimits → HotPath ─┬─ proxied POST routes (routes.Proxy)
                                                         └─ Starlette: errors → exceptions → router → the other routes
    ServerSpans (gateway.telemetry) is there only with tracing on.
    """
    proxies = {route.path: route.app for route in app.routes if isinstance(route, Route) and route.path in PROXIED}
    gateway: Gateway = app.state.gateway
    on_refused = gateway.audit_refused if gateway.audit is not None else None
    stack: ASGIApp = RequestLimitsMiddleware(HotPath(app, proxies), limits=settings.server, on_refused=on_refused)
    if gateway.telemetry is not None:  # outside the limits, so refused requests are traced too
        stack = gateway.telemetry.middleware(stack)
    return RequestIdMiddleware(stack)


async def on_gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return Response(exc.render(), exc.status, exc.headers, media_type="application/json")


async def on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        error: GatewayError = MethodNotAllowed(f"Method {request.method} is not allowed on {request.url.path}.")
        return Response(error.render(), 405, exc.headers, media_type="application/json")
    if exc.status_code == 404:
        error = NotFound(f"Unknown route: {request.method} {request.url.path}.", code="unknown_route")
    else:
        error = GatewayError(str(exc.detail))
        error.status = exc.status_code
    return Response(error.render(), error.status, media_type="application/json")


async def on_unexpected(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Exception)
    error = internal_error(request.scope.get("state", {}).get("request_id", "-"), exc)
    return Response(error.render(), 500, media_type="application/json")


class HotPath:
    """The proxied POST routes skip Starlette's routing and exception layers; every other request goes through them.

    A proxied route answers its own errors, expected or not (routes.Proxy), so it needs nothing of those layers.
    """

    def __init__(self, app: ASGIApp, proxies: dict[str, ASGIApp]) -> None:
        self.app = app
        self.proxies = proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        proxy = self.proxies.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        await (proxy or self.app)(scope, receive, send)


def build_app(settings: Settings) -> ASGIApp:
    gateway = Gateway(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with gateway.running():
            # what start-up built lives as long as the process: out of the collector's sight, so a full
            # collection under load walks only the requests' objects (46 ms pauses before, seen as p99)
            gc.collect()
            gc.freeze()
            yield

    app = Starlette(
        routes=routes(gateway),
        exception_handlers={GatewayError: on_gateway_error, HTTPException: on_http_exception, Exception: on_unexpected},
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    return build_middleware_stack(settings, app)


def app_from_env() -> ASGIApp:
    """The factory uvicorn workers call: settings from the file named by GATEWAY_CONFIG."""
    return build_app(settings_module.load(os.environ["GATEWAY_CONFIG"]))
