"""Pipeline stage 6: serve the request from a deployment of the model, retrying, failing over and degrading.

For the requested model, then each of its `fallbacks` in turn, attempts follow the router's plan (available
deployments in strategy order, round again while attempts remain). A connect error, a timeout, a 429 or a 5xx
is retried; another 4xx is the upstream's verdict and is passed through, except a context-window error, which
moves on to the model's `context_window_fallbacks`. Moving to another deployment is immediate; retrying the
same one waits an exponential backoff with full jitter, or the upstream's `Retry-After` when that is longer
(a `Retry-After` beyond `max_retry_after` ends the retries). A stream is retried only until its response
starts: once a byte may have reached the client, a break ends the stream with an error event instead.

When everything failed, a model with a `default_response` answers with it (`x-gateway-degraded`); otherwise
the client gets the last upstream answer (status and body) or the gateway's 502/503/504.
"""

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING

from gateway import codec
from gateway.errors import GatewayError, InvalidRequest, NoDeploymentAvailable, UpstreamTimeout, UpstreamUnreachable
from gateway.pipeline import RequestContext, Result
from gateway.settings import Deployment, ModelConfig, Retries
from gateway.upstream import degraded, openai_wire
from gateway.upstream.adapters import Call, adapters
from gateway.upstream.client import UpstreamClient, UpstreamResponse
from gateway.upstream.router import Router

if TYPE_CHECKING:
    from gateway.telemetry.upstream import Attempts

RETRIED_STATUSES = frozenset({408, 409, 429}) | frozenset(range(500, 600))
Outcome = Result | GatewayError


class Forward:
    def __init__(
        self,
        client: UpstreamClient,
        router: Router,
        secrets: Mapping[Deployment, str | None],
        models: Mapping[str, ModelConfig],
        attempts: "Attempts | None" = None,
    ) -> None:
        self.client = client
        self.router = router
        self.secrets = secrets
        self.models = models
        self.adapters = adapters()
        self.attempts = attempts  # telemetry: a span per attempt, its trace headers on the request (or None)

    async def __call__(self, ctx: RequestContext) -> None:
        assert ctx.model is not None
        queue = [ctx.model, *(self.models[name] for name in ctx.model.fallbacks)]
        outcome: Outcome = NoDeploymentAvailable(f"No deployment of '{ctx.model.name}' is available.")
        while queue:
            model = queue.pop(0)
            outcome = await self._serve(ctx, model)
            if isinstance(outcome, Result) and _context_window_exceeded(outcome):
                queue = [self.models[name] for name in model.context_window_fallbacks]
                continue
            if isinstance(outcome, Result) and outcome.status not in RETRIED_STATUSES:
                if model is not ctx.model:
                    outcome.headers["x-gateway-fallback"] = model.name
                ctx.result = outcome
                return
        if ctx.model.default_response is not None and ctx.endpoint == "chat/completions":
            ctx.result = degraded.answer(ctx.model, ctx.model.default_response, ctx.stream, ctx.attempts)
            return
        if isinstance(outcome, GatewayError):
            raise outcome
        ctx.result = outcome

    async def _serve(self, ctx: RequestContext, model: ModelConfig) -> Outcome:
        """One model's attempts; the first answer that is not worth retrying, or the last failure."""
        plan = [d for d in self.router.plan(model) if self.adapters[d.provider].supports(ctx.endpoint)]
        if not plan:
            if all(self.adapters[d.provider].supports(ctx.endpoint) for d in model.deployments):
                return NoDeploymentAvailable(f"No deployment of '{model.name}' is available right now.")
            return InvalidRequest(f"The model '{model.name}' does not serve /v1/{ctx.endpoint}.", param="model")
        outcome: Outcome | None = None
        retry_after: float | None = None
        for attempt in range(model.retries.attempts):
            deployment = plan[attempt % len(plan)]
            if attempt:
                same = deployment == plan[(attempt - 1) % len(plan)]
                delay = _delay(model.retries, attempt, retry_after, same)
                if delay is None:
                    break
                await asyncio.sleep(delay)
            try:
                if self.attempts is None:
                    outcome = await self._attempt(ctx, model, deployment)
                else:
                    outcome = await self.attempts.run(ctx, model, deployment, self._attempt)
            except (UpstreamUnreachable, UpstreamTimeout) as exc:
                outcome, retry_after = exc, None
                continue
            if outcome.status not in RETRIED_STATUSES:
                return outcome
            retry_after = _retry_after(outcome.headers)
        assert outcome is not None
        return outcome

    async def _attempt(self, ctx: RequestContext, model: ModelConfig, deployment: Deployment) -> Result:
        secret = self.secrets.get(deployment)
        adapter = self.adapters[deployment.provider]
        call = Call(ctx.endpoint, ctx.body, ctx.raw_body, ctx.request_id, ctx.headers)
        request = adapter.build_request(deployment, secret, call)
        if self.attempts is not None:
            self.attempts.inject(ctx, request.headers)  # W3C traceparent of this attempt's span, nothing else
        ctx.attempts += 1
        ctx.deployment = deployment
        started = time.perf_counter()
        self.router.started(deployment)
        try:
            response = await self.client.send(request)
            ctx.upstream_ms = (time.perf_counter() - started) * 1000
        except BaseException as exc:
            self.router.finished(deployment, None)
            self.router.record(deployment, model.breaker, False if isinstance(exc, GatewayError) else None)
            raise
        self.router.record(deployment, model.breaker, None if response.status == 429 else response.status < 500)
        latency = time.perf_counter() - started if response.status < 400 else None
        headers = openai_wire.response_headers(response.headers)
        headers["x-gateway-deployment"] = deployment.label
        headers["x-gateway-attempts"] = str(ctx.attempts)
        if ctx.stream and response.status == 200:
            relay = _relay(ctx, adapter.stream(response.iter_bytes(), call))
            return Result(200, headers, relay, self._closer(response, deployment, latency))
        try:
            body = adapter.response_body(response.status, await response.read())
        finally:
            self.router.finished(deployment, latency)
        if response.status >= 400:
            body = openai_wire.scrub(body, secret)
            if "retry-after" in response.headers:
                headers["retry-after"] = response.headers["retry-after"]
        return Result(response.status, headers, body)

    def _closer(self, response: UpstreamResponse, deployment: Deployment, latency: float | None) -> Callable[[], None]:
        def close() -> None:
            response.close()
            self.router.finished(deployment, latency)

        return close


def _context_window_exceeded(result: Result) -> bool:
    if result.status != 400 or not isinstance(result.body, bytes) or b"context_length_exceeded" not in result.body:
        return False
    try:
        return bool(codec.loads(result.body)["error"]["code"] == "context_length_exceeded")
    except (codec.JSONDecodeError, KeyError, TypeError):
        return False


def _retry_after(headers: Mapping[str, str]) -> float | None:
    try:
        return max(0.0, float(headers["retry-after"]))
    except (KeyError, ValueError):
        return None


def _delay(retries: Retries, attempt: int, retry_after: float | None, same: bool) -> float | None:
    """Seconds to wait before `attempt` (1-based retries), or None to stop retrying."""
    if not same:
        return 0.0
    if retry_after is not None and retry_after > retries.max_retry_after:
        return None
    backoff = random.uniform(0, min(retries.max_backoff, retries.backoff * 2 ** (attempt - 1)))
    return max(backoff, retry_after or 0.0)


async def _relay(ctx: RequestContext, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            yield chunk
    except GatewayError as exc:
        ctx.error = exc
        yield openai_wire.stream_error_event(f"The model server broke off the stream: {exc.message}", exc.code or "")
