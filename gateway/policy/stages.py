"""The pipeline stages of the policy engine: resolve the effective policy, check the input, check the output.

    ResolvePolicy  the effective policy for (team, key, tags, model, route), from the serving revision
    CheckInput     models, metadata, answer-length caps, token limits, text guardrails; redacts the body
    CheckOutput    text guardrails on the answer: JSON at once, SSE chunk by chunk with a carry-over window

A request resolves its policy once, so it is served by one revision from start to end, whatever reloads
happen meanwhile. A block on input answers 400 `policy_violation` without calling the upstream; a block on a
JSON answer replaces it with that 400; a block in a stream that has started ends it with an error event.
"""

import asyncio
from collections.abc import AsyncIterator

from gateway import codec
from gateway.guardrails import tokens
from gateway.guardrails.base import Finding
from gateway.guardrails.stream import StreamGuard, scan_json
from gateway.pipeline import RequestContext
from gateway.policy.engine import Recorder, check_input, violation, warnings
from gateway.policy.loader import PolicyStore

WARNINGS_HEADER = "x-gateway-policy-warnings"
OFF_LOOP_BYTES = 64 * 1024


class ResolvePolicy:
    def __init__(self, store: PolicyStore) -> None:
        self.store = store

    async def __call__(self, ctx: RequestContext) -> None:
        principal = ctx.principal
        assert principal is not None
        policies = self.store.current
        ctx.policy = policies.resolve(principal.team, principal.key_id, principal.tags, ctx.body["model"], ctx.endpoint)


class CheckInput:
    """Small requests are checked on the event loop (microseconds); a large body, whose scans and token count
    take milliseconds, is checked in a worker thread, and a tokenizer is loaded (once) in one too."""

    async def __call__(self, ctx: RequestContext) -> None:
        effective, model = ctx.policy, ctx.model
        assert effective is not None and model is not None
        if not effective.checks_input:
            return
        deployment = model.deployments[0]
        # count tokens as the upstream model does, or as the name clients use if only that one is known
        tokenizer = deployment.upstream_model if tokens.encoding_for(deployment.upstream_model) else model.name
        size = len(ctx.raw_body)
        if effective.input_tokens and size > min(rule.limit for _, rule in effective.input_tokens):
            encoding = tokens.encoding_for(tokenizer)
            if encoding is not None:
                await asyncio.to_thread(tokens.encoding, encoding)
        args = (effective, ctx.endpoint, ctx.body, ctx.headers, deployment.provider, ctx.decisions, tokenizer)
        if size > OFF_LOOP_BYTES:
            changed = await asyncio.to_thread(check_input, *args)
        else:
            changed = check_input(*args)
        if changed:
            ctx.raw_body = codec.dumps(ctx.body)


class CheckOutput:
    async def __call__(self, ctx: RequestContext) -> None:
        effective, result = ctx.policy, ctx.result
        assert effective is not None and result is not None
        if not effective.output_text or result.status != 200:
            _warn(ctx)
            return
        recorder = Recorder(effective.revision, ctx.decisions)
        if isinstance(result.body, bytes):
            body, finding = scan_json(ctx.endpoint, result.body, effective.output_text, recorder.finding("output"))
            if finding is not None:
                assert recorder.blocking is not None, "scan_json records every finding"
                raise violation(recorder.blocking, finding.rule.message)
            result.body = body
        else:
            result.body = _guarded(ctx, recorder, result.body)
        _warn(ctx)


async def _guarded(ctx: RequestContext, recorder: Recorder, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    assert ctx.policy is not None

    def blocked(finding: Finding) -> bytes:
        assert recorder.blocking is not None, "the guard records a finding before it blocks"
        ctx.error = violation(recorder.blocking, finding.rule.message)
        return b"data: " + ctx.error.render() + b"\n\n"

    guard = StreamGuard(ctx.endpoint, ctx.policy.output_text, recorder.finding("output"), blocked)
    try:
        async for chunk in guard.run(chunks):
            yield chunk
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()


def _warn(ctx: RequestContext) -> None:
    assert ctx.result is not None
    if ctx.decisions:
        names = warnings(ctx.decisions)
        if names:
            ctx.result.headers[WARNINGS_HEADER] = names
