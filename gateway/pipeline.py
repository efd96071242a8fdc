"""The request context and the one ordered pipeline every proxied request goes through.

    stages, in order (each `async def __call__(ctx) -> None`, may raise GatewayError; the list is built in
    gateway.app.Gateway, which owns the components the stages use):
      1 Authenticate   virtual key → principal                      (gateway.auth.stage)
        ParseBody      one orjson parse, the governed fields checked (gateway.parsing)
      2 ResolveModel   requested model → configured model, key may use it (gateway.routing)
        ResolvePolicy  the effective policy for (team, key, tags, model, route) (gateway.policy.stages)
      4 CheckInput     policy rules on the request: models, metadata, token caps, text guardrails
      3 Admit          rate limits and budget reservation, one round trip (gateway.limits.stage)
        AskUsage       a stream asks the upstream for its usage chunk
      6 Forward        call the upstream, pass its answer through   (gateway.upstream.stage)
      7 CheckOutput    text guardrails on the answer, streams checked chunk by chunk
        Meter          x-ratelimit-* headers; a stream's usage chunk caught (hidden if the client did not ask)
    final stages: run once the answer is complete, also after errors and client disconnects:
      8 Settle         usage and cost; counters settled (gateway.limits.stage)
      9 Audit          one event per request, appended to the spool (gateway.audit.stage)

The PII stages (gateway.pii.stage) sit after CheckInput (Redact) and right after Forward (MaskAnswer, then
RestorePii). With `audit.bodies`, KeepAnswer (gateway.audit.stage) sits between MaskAnswer and RestorePii.
With telemetry on, gateway.telemetry's ObservedPipeline runs the same lists, each stage in a span.
A stage that does nothing is not in the list: the policy stages are there only when a policy directory is
configured. Stages never see HTTP objects: routes build the context, the pipeline fills `ctx.result`,
routes turn it into a response.
"""

import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from gateway.auth.keys import Principal
from gateway.errors import GatewayError, InternalError
from gateway.settings import Deployment, ModelConfig

if TYPE_CHECKING:
    from gateway.audit.bodies import KeptAnswer
    from gateway.limits.prices import Usage
    from gateway.limits.service import Held
    from gateway.pii.vault import Vault
    from gateway.policy.compiled import Effective
    from gateway.policy.engine import Decision


@dataclass(slots=True)
class Result:
    """What the pipeline answers: a status, headers, and a body that is bytes or a stream of bytes."""

    status: int
    headers: dict[str, str]
    body: bytes | AsyncIterator[bytes]
    close: Callable[[], None] | None = None


@dataclass(slots=True)
class RequestContext:
    request_id: str
    endpoint: str
    headers: Mapping[str, str]
    raw_body: bytes
    body: dict[str, Any]
    api_key: str | None
    client: str = ""
    started: float = field(default_factory=time.perf_counter)
    started_at: float = field(default_factory=time.time)
    principal: Principal | None = None
    model: ModelConfig | None = None
    policy: "Effective | None" = None
    decisions: "list[Decision]" = field(default_factory=list)
    attempts: int = 0
    deployment: Deployment | None = None
    upstream_ms: float | None = None
    ttft_ms: float | None = None
    stream_usage: dict[str, Any] | None = None
    answer_digest: str = ""
    prompt_tokens: int | None = None
    held: "Held | None" = None
    limit_headers: dict[str, str] = field(default_factory=dict)
    usage_hidden: bool = False
    received: list[bytes] = field(default_factory=list)
    usage: "Usage | None" = None
    cost_micro_usd: int = 0
    vault: "Vault | None" = None
    pii: list[dict[str, Any]] = field(default_factory=list)
    kept_answer: "KeptAnswer | None" = None  # the answer after MaskAnswer, before RestorePii (audit.bodies)
    result: Result | None = None
    error: GatewayError | None = None
    client_disconnected: bool = False
    telemetry: Any = None  # gateway.telemetry's RequestRecord, set only when telemetry is on

    @property
    def stream(self) -> bool:
        return self.body.get("stream") is True


class Stage(Protocol):
    def __call__(self, ctx: RequestContext) -> Coroutine[Any, Any, None]: ...


class Pipeline:
    """Runs the request stages in order, then the final stages exactly once, however the request ends."""

    def __init__(self, stages: Sequence[Stage], final_stages: Sequence[Stage] = ()) -> None:
        self.stages = tuple(stages)
        self.final_stages = tuple(final_stages)

    async def __call__(self, ctx: RequestContext) -> Result:
        try:
            for stage in self.stages:
                await stage(ctx)
        except GatewayError as exc:
            ctx.error = exc
            await self._finish(ctx)
            raise
        except BaseException as exc:
            if isinstance(exc, Exception):  # a bug: the audit event says 500 (routes log it and answer it)
                ctx.error = InternalError(f"unexpected {type(exc).__name__}")
            else:
                ctx.client_disconnected = True  # cancelled: the client went away before the answer
            await self._finish(ctx)
            raise
        assert ctx.result is not None, "the last stage must set ctx.result"
        if isinstance(ctx.result.body, bytes):
            await self._finish(ctx)
        else:
            ctx.result.body = self._finish_after(ctx, ctx.result.body)
        return ctx.result

    async def _finish_after(self, ctx: RequestContext, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        completed = False
        try:
            async for chunk in body:
                yield chunk
            completed = True
        finally:
            ctx.client_disconnected = not completed and ctx.error is None
            if ctx.result is not None and ctx.result.close is not None:
                ctx.result.close()
            await self._finish(ctx)

    async def _finish(self, ctx: RequestContext) -> None:
        if not self.final_stages:
            return
        with anyio.CancelScope(shield=True):
            for stage in self.final_stages:
                await stage(ctx)
