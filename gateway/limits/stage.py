"""The pipeline stages of rate limits and budgets.

    Admit       after the input checks: the counters of every rate_limit and budget rule that applies,
                checked and taken in one round trip; 429 (Retry-After) when a limit or budget has no room
    AskUsage    before the upstream call: a stream is asked for its usage chunk (stream_options.include_usage)
                even when the client did not ask; Meter hides it again from such a client
    Meter       after the output checks: the x-ratelimit-* headers; on a stream, the usage chunk is caught,
                and the events the client got are kept until then, to count an abandoned answer's tokens
    Settle      final stage, however the request ended: its usage and cost (ctx.usage, ctx.cost_micro_usd),
                then the counters settled: TPM corrected, slots released, budget charged the real cost

Admission comes after the input checks (DESIGN.md puts it before): its reservation needs the answer cap
that a max_tokens rule may have lowered, and a request a policy blocks never reaches a model, so it costs
nothing and takes no quota.
"""

import asyncio
import math
import secrets
import time
from collections.abc import AsyncIterator
from zoneinfo import ZoneInfo

from gateway import codec
from gateway.errors import BudgetExceeded, Limited, RateLimited
from gateway.guardrails import sse, tokens
from gateway.guardrails.base import Action
from gateway.limits import costs
from gateway.limits.alerts import usd
from gateway.limits.counters import Admission
from gateway.limits.plan import Periods, Planned, Planner
from gateway.limits.prices import Usage, cost, usage_of
from gateway.limits.service import Held, Limits
from gateway.pipeline import RequestContext
from gateway.policy.engine import Decision
from gateway.settings import LimitsSettings

OFF_LOOP_BYTES = 64 * 1024
USAGE_ENDPOINTS = ("chat/completions", "completions")


class Admit:
    def __init__(self, limits: Limits, pricing: costs.Pricing, settings: LimitsSettings) -> None:
        self.limits = limits
        self.pricing = pricing
        self.settings = settings
        periods = Periods(ZoneInfo(settings.timezone))
        self.planner = Planner(settings.key_prefix, periods, int(settings.lease_seconds * 1000))
        self._prefix = secrets.token_hex(4)
        self._serial = 0

    async def __call__(self, ctx: RequestContext) -> None:
        effective, principal, model = ctx.policy, ctx.principal, ctx.model
        if effective is None or not (effective.rate_limits or effective.budgets):
            return
        assert principal is not None and model is not None
        user = str(ctx.body.get("user") or "")
        template = self.planner.template(effective, principal.key_id, principal.team, model.name, user, time.time())
        cap = costs.answer_cap(ctx.endpoint, ctx.body)
        if template.needs_tokens:
            ctx.prompt_tokens = await self._count(ctx)
        prompt = ctx.prompt_tokens or 0
        reserve = self.pricing.reserve(model, prompt, cap, self.settings.default_max_tokens) if template.budgets else 0
        planned = template.fill(prompt, cap, reserve)
        self._serial += 1
        held = await self.limits.admit(planned, f"{self._prefix}{self._serial:x}")
        admission = held.admission
        ctx.limit_headers = headers(planned, admission)
        if admission.over:
            _record(ctx, effective.revision, planned, admission)
        if not admission.ok:
            raise _refusal(planned, admission, ctx.limit_headers)
        ctx.held = held

    async def _count(self, ctx: RequestContext) -> int:
        assert ctx.model is not None
        name = costs.encoding_of(ctx.model)
        if len(ctx.raw_body) > OFF_LOOP_BYTES or (name is not None and not tokens.loaded(name)):
            return await asyncio.to_thread(costs.prompt_tokens, ctx.endpoint, ctx.body, ctx.model)
        return costs.prompt_tokens(ctx.endpoint, ctx.body, ctx.model)


def _record(ctx: RequestContext, revision: str, planned: list[Planned], admission: Admission) -> None:
    """Decisions for the audit trail: the counter that refused, and every shadow counter that was over."""
    for index in admission.over:
        item = planned[index]
        action: Action = "block" if index == admission.refused else "shadow"
        if action == "shadow" and item.ref.action == "block":
            continue  # an enforced counter over its limit that did not refuse: another one refused first
        c = item.counter
        detail = f"{c.kind} {admission.states[index].used}+{c.amount} > {c.limit}"
        ref = item.ref
        ctx.decisions.append(Decision(ref.policy, revision, ref.rule, ref.kind, action, "input", detail, 0))


def _refusal(planned: list[Planned], admission: Admission, limit_headers: dict[str, str]) -> Limited:
    assert admission.refused is not None
    item = planned[admission.refused]
    c, ref = item.counter, item.ref
    retry = admission.retry_after_ms
    extra = {**limit_headers}
    if retry >= 0:
        extra["retry-after"] = str(max(1, math.ceil(retry / 1000)))
        extra["retry-after-ms"] = str(retry)
    where = f"(policy '{ref.policy}', rule '{ref.rule}')"
    if c.kind == "budget":
        used = admission.states[admission.refused].used
        message = item.rule.message or (
            f"Budget exceeded {where}: the {item.period} budget of {usd(c.limit)} USD ({usd(used)} used or "
            f"reserved) has no room for this request's maximum cost of {usd(c.amount)} USD."
        )
        budget = BudgetExceeded(message, policy=ref.policy, rule=ref.rule, headers=extra)
        budget.headers["x-should-retry"] = "false"
        return budget
    unit = {"rpm": "requests per minute", "tpm": "tokens per minute", "concurrent": "requests in flight"}[c.kind]
    if retry < 0:
        message = f"Request too large {where}: it needs {c.amount} tokens, over the limit of {c.limit} {unit}."
        extra["x-should-retry"] = "false"
    else:
        used = admission.states[admission.refused].used
        message = f"Rate limit reached {where}: limit {c.limit} {unit}, used {used}."
        message += f" Please try again in {retry / 1000:.3f}s."
    error = RateLimited(item.rule.message or message, policy=ref.policy, rule=ref.rule, headers=extra)
    if c.kind == "tpm":
        error.type = "tokens"
    return error


def headers(planned: list[Planned], admission: Admission) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers, from the tightest enforced RPM and TPM counters."""
    rpm = tpm = None  # (remaining, limit, reset ms) of the tightest of each
    for item, state in zip(planned, admission.states, strict=True):
        c = item.counter
        kind = c.kind
        if (kind == "rpm" or kind == "tpm") and c.enforce:
            row = (c.limit - state.used, c.limit, state.reset_ms)
            if kind == "rpm":
                if rpm is None or row < rpm:
                    rpm = row
            elif tpm is None or row < tpm:
                tpm = row
    out: dict[str, str] = {}
    if rpm is not None:
        out["x-ratelimit-limit-requests"] = str(rpm[1])
        out["x-ratelimit-remaining-requests"] = str(max(0, rpm[0]))
        out["x-ratelimit-reset-requests"] = duration(rpm[2])
    if tpm is not None:
        out["x-ratelimit-limit-tokens"] = str(tpm[1])
        out["x-ratelimit-remaining-tokens"] = str(max(0, tpm[0]))
        out["x-ratelimit-reset-tokens"] = duration(tpm[2])
    return out


def duration(ms: int) -> str:
    """OpenAI's reset format: "20ms", "1.5s", "6m0s" (whole milliseconds, in integers)."""
    if ms < 1000:
        return f"{max(0, ms)}ms"
    minutes, rest = divmod(ms, 60_000)
    seconds, millis = divmod(rest, 1000)
    text = f"{seconds}.{millis:03d}".rstrip("0").rstrip(".") + "s" if millis else f"{seconds}s"
    return f"{minutes}m{text}" if minutes else text


class AskUsage:
    async def __call__(self, ctx: RequestContext) -> None:
        if not ctx.stream or ctx.endpoint not in USAGE_ENDPOINTS:
            return
        options = ctx.body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage") is True:
            return
        ctx.body["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
        ctx.raw_body = codec.dumps(ctx.body)
        ctx.usage_hidden = True


class Meter:
    async def __call__(self, ctx: RequestContext) -> None:
        result = ctx.result
        assert result is not None
        if ctx.limit_headers:
            result.headers.update(ctx.limit_headers)
        if result.status == 200 and not isinstance(result.body, bytes):
            result.body = _metered(ctx, result.body)


async def _metered(ctx: RequestContext, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    splitter = sse.Splitter()
    ctx.received = []
    try:
        async for chunk in chunks:
            events = splitter.feed(chunk)
            if ctx.stream_usage is None and any(b'"usage":{' in event for event in events):
                events = _take_usage(ctx, events)
            if ctx.stream_usage is None:
                ctx.received.extend(events)
            if events:
                yield b"".join(events)
        rest = splitter.rest()
        if rest:
            yield rest
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()


def _take_usage(ctx: RequestContext, events: list[bytes]) -> list[bytes]:
    kept = []
    for raw in events:
        data = sse.event_data(raw) if b'"usage":{' in raw else None
        event = _loads(data) if data else None
        holder = event.get("response", event) if isinstance(event, dict) else None
        usage = holder.get("usage") if isinstance(holder, dict) else None
        if isinstance(usage, dict):
            ctx.stream_usage = usage
            ctx.received = []
            if ctx.usage_hidden and isinstance(event, dict) and event.get("choices") == []:
                continue  # the usage chunk this client did not ask for
        kept.append(raw)
    return kept


def _loads(data: bytes) -> object:
    try:
        return codec.loads(data)
    except codec.JSONDecodeError:
        return None


class Settle:
    """`audited`: the audit trail records every request's usage and cost, so they are worked out even for a
    request that holds no counters; otherwise only requests that do are looked at."""

    def __init__(self, limits: Limits | None, pricing: costs.Pricing, audited: bool) -> None:
        self.limits = limits
        self.pricing = pricing
        self.audited = audited

    async def __call__(self, ctx: RequestContext) -> None:
        if ctx.held is None and not self.audited:
            return
        usage = await self._usage(ctx)
        ctx.usage = usage
        price = self.pricing.price(ctx.deployment)
        ctx.cost_micro_usd = cost(price, usage) if price is not None and usage is not None else 0
        held = ctx.held
        if held is not None and self.limits is not None:
            self.limits.settle(held, _actual(held, usage, ctx.cost_micro_usd))

    async def _usage(self, ctx: RequestContext) -> Usage | None:
        result = ctx.result
        if ctx.stream_usage is not None:
            return usage_of(ctx.stream_usage)
        if result is None or result.status != 200:
            return None
        if isinstance(result.body, bytes):
            usage = _body_usage(result.body)
            if usage is None and ctx.held is not None and ctx.model is not None:  # an upstream that sends none
                model, body = ctx.model, result.body
                produced = await asyncio.to_thread(costs.answer_tokens, ctx.endpoint, body, model)
                prompt = ctx.prompt_tokens or 0
                return Usage(input_tokens=prompt, output_tokens=produced)
            return usage
        if not ctx.received or ctx.model is None:  # a stream that sent nothing
            return None
        # a stream that ended without its usage chunk (abandoned, or broken off): count what was produced
        model, received = ctx.model, ctx.received
        produced = await asyncio.to_thread(costs.produced_tokens, ctx.endpoint, received, model)
        if ctx.prompt_tokens is None:
            ctx.prompt_tokens = await asyncio.to_thread(costs.prompt_tokens, ctx.endpoint, ctx.body, model)
        return Usage(input_tokens=ctx.prompt_tokens, output_tokens=produced)


def _body_usage(body: bytes) -> Usage | None:
    if b'"usage"' not in body:
        return None
    parsed = _loads(body)
    return usage_of(parsed.get("usage")) if isinstance(parsed, dict) else None


def _actual(held: Held, usage: Usage | None, spent: int) -> list[int]:
    actual = []
    for item in held.planned:
        kind = item.counter.kind
        if kind == "tpm":
            actual.append(usage.total if usage is not None else 0)
        elif kind == "budget":
            actual.append(spent)
        else:
            actual.append(1)
    return actual
