"""Pipeline stage 6: send the request to a deployment of the model, retrying and failing over, and pass on its answer.

Attempts follow the router's plan (the model's deployments in strategy order, round again if attempts remain).
A connect error, a timeout, a 429 or a 5xx is retried; another 4xx is the upstream's verdict and is passed
through. Moving to another deployment is immediate; retrying the same one waits an exponential backoff with
full jitter, or the upstream's `Retry-After` when that is longer (a `Retry-After` beyond `max_retry_after`
ends the retries). A stream is retried only until its response starts: once a byte may have reached the
client, a break ends the stream with an error event instead. When every attempt failed, the client gets the
last upstream answer (status and body) or the gateway's 502/504.
"""

import asyncio
import random
import time
from collections.abc import AsyncIterator, Mapping

from gateway.errors import GatewayError, InvalidRequest, UpstreamTimeout, UpstreamUnreachable
from gateway.pipeline import RequestContext, Result
from gateway.settings import Deployment, Retries
from gateway.upstream import openai_wire
from gateway.upstream.adapters import Call, adapters
from gateway.upstream.client import UpstreamClient, UpstreamResponse
from gateway.upstream.router import Router

RETRIED_STATUSES = frozenset({408, 409, 429}) | frozenset(range(500, 600))


class Forward:
    def __init__(self, client: UpstreamClient, router: Router, secrets: Mapping[Deployment, str | None]) -> None:
        self.client = client
        self.router = router
        self.secrets = secrets
        self.adapters = adapters()

    async def __call__(self, ctx: RequestContext) -> None:
        assert ctx.model is not None
        retries = ctx.model.retries
        plan = [d for d in self.router.plan(ctx.model) if self.adapters[d.provider].supports(ctx.endpoint)]
        if not plan:
            raise InvalidRequest(f"The model '{ctx.model.name}' does not serve /v1/{ctx.endpoint}.", param="model")
        failure: Result | GatewayError | None = None
        retry_after: float | None = None
        for attempt in range(retries.attempts):
            deployment = plan[attempt % len(plan)]
            if attempt:
                delay = _delay(retries, attempt, retry_after, same=deployment == plan[(attempt - 1) % len(plan)])
                if delay is None:
                    break
                await asyncio.sleep(delay)
            try:
                result = await self._attempt(ctx, deployment)
            except (UpstreamUnreachable, UpstreamTimeout) as exc:
                failure, retry_after = exc, None
                continue
            if result.status not in RETRIED_STATUSES:
                ctx.result = result
                return
            failure, retry_after = result, _retry_after(result.headers)
        if isinstance(failure, GatewayError):
            raise failure
        assert failure is not None
        ctx.result = failure

    async def _attempt(self, ctx: RequestContext, deployment: Deployment) -> Result:
        secret = self.secrets.get(deployment)
        adapter = self.adapters[deployment.provider]
        call = Call(ctx.endpoint, ctx.body, ctx.raw_body, ctx.request_id, ctx.headers)
        request = adapter.build_request(deployment, secret, call)
        ctx.attempts += 1
        started = time.perf_counter()
        self.router.started(deployment)
        try:
            response = await self.client.send(request)
        except GatewayError:
            self.router.finished(deployment, None)
            raise
        latency = time.perf_counter() - started if response.status < 400 else None
        headers = openai_wire.response_headers(response.headers)
        headers["x-gateway-deployment"] = deployment.label
        headers["x-gateway-attempts"] = str(ctx.attempts)
        if ctx.stream and response.status == 200:
            relay = _relay(ctx, adapter.stream(response.iter_bytes()))
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

    def _closer(self, response: UpstreamResponse, deployment: Deployment, latency: float | None):
        def close() -> None:
            response.close()
            self.router.finished(deployment, latency)

        return close


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
