"""Telemetry of the upstream calls: a record (and, with tracing, a CLIENT span) per attempt of the Forward stage,
and the W3C trace headers on each attempt's request, so a self-hosted model server joins the trace.

    span name    `{gen_ai.operation.name} {upstream model}`, e.g. `chat gpt-4o-mini` (GenAI conventions)
    attributes   gen_ai.operation.name, gen_ai.provider.name and gen_ai.system (same value), gen_ai.request.model
                 (the upstream's name for the model), gen_ai.request.max_tokens / temperature / top_p / stream,
                 server.address, server.port, gateway.deployment, gateway.attempt; from the answer:
                 http.response.status_code, gen_ai.response.model, gen_ai.response.id,
                 gen_ai.response.finish_reasons, gen_ai.usage.input_tokens, gen_ai.usage.output_tokens
    status       ERROR with error.type: the upstream's status code ("503") for an answer >= 400, the gateway's
                 error code (upstream_timeout, upstream_unreachable) when no answer came, or the code of the
                 error that broke a stream off

A stream's attempt span ends when the stream does (its Result.close, or Conclude should that never come),
with what the StreamTap saw: the first chunk's model and id, the finish reasons, and the usage chunk.
The trace headers are the only ones added: nothing of the client's request is forwarded.
"""

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway import codec
from gateway.errors import GatewayError
from gateway.limits.prices import usage_of
from gateway.pipeline import RequestContext, Result
from gateway.settings import Deployment, ModelConfig
from gateway.telemetry import names
from gateway.telemetry.record import Attempt, RequestRecord, record_of

FINISH_REASON = re.compile(rb'"finish_reason":\s*"([A-Za-z_]+)"')
AttemptCall = Callable[[RequestContext, ModelConfig, Deployment], Awaitable[Result]]


class Attempts:
    """The Forward stage's observer: runs each attempt inside its record (and span), and adds trace headers."""

    def __init__(self, tracer: Tracer | None) -> None:
        self.tracer = tracer
        self.propagator = TraceContextTextMapPropagator()

    async def run(self, ctx: RequestContext, model: ModelConfig, deployment: Deployment, call: AttemptCall) -> Result:
        record = record_of(ctx)
        attempt = Attempt(deployment, time.perf_counter(), len(record.attempts) + 1)
        record.attempts.append(attempt)
        if self.tracer is not None and record.sampled:
            name, attributes = attempt_attributes(ctx, deployment, attempt.number)
            attempt.span = self.tracer.start_span(name, record.stage, SpanKind.CLIENT, attributes)
        try:
            result = await call(ctx, model, deployment)
        except BaseException as exc:
            _finish(attempt, 0, _error_type(exc))
            raise
        if result.status == 200 and not isinstance(result.body, bytes):
            record.streaming = attempt
            result.close = _closing(result.close, lambda: finish_stream(ctx, record, attempt))
            return result
        if attempt.span is not None and result.status == 200 and attempt.span.is_recording():
            assert isinstance(result.body, bytes)
            attempt.span.set_attributes(answer_attributes(result.body))
        _finish(attempt, result.status, str(result.status) if result.status >= 400 else "")
        return result

    def inject(self, ctx: RequestContext, headers: dict[str, str]) -> None:
        """`traceparent` (and `tracestate`) of the attempt being built, added to its request headers; for a
        request the sampler left out, the server span's (flags 00: the model server should not record it)."""
        record = record_of(ctx)
        span = record.attempts[-1].span if record.attempts else None
        if span is not None:
            self.propagator.inject(headers, context=trace.set_span_in_context(span))
        elif record.parent is not None:
            self.propagator.inject(headers, context=record.parent)


def attempt_attributes(ctx: RequestContext, deployment: Deployment, number: int) -> tuple[str, dict[str, Any]]:
    operation, provider = names.operation(ctx.endpoint), names.provider(deployment)
    attributes: dict[str, Any] = {
        names.OPERATION: operation,
        names.PROVIDER: provider,
        names.SYSTEM: provider,
        names.REQUEST_MODEL: deployment.upstream_model,
        names.REQUEST_STREAM: ctx.stream,
        names.DEPLOYMENT: deployment.label,
        names.ATTEMPT: number,
        **names.request_parameters(ctx.body),
    }
    url = urlsplit(deployment.base_url)
    if url.hostname:
        attributes[names.SERVER_ADDRESS] = url.hostname
        attributes[names.SERVER_PORT] = url.port or (443 if url.scheme == "https" else 80)
    return f"{operation} {deployment.upstream_model}", attributes


def answer_attributes(body: bytes) -> dict[str, Any]:
    """gen_ai.response.* and gen_ai.usage.* of an OpenAI JSON answer (chat, completions, embeddings, Responses)."""
    answer = codec.loads_object(body)
    if answer is None:
        return {}
    attributes = _identity(answer)
    choices = answer.get("choices")
    choices = choices if isinstance(choices, list) else []
    reasons = [c["finish_reason"] for c in choices if isinstance(c, dict) and isinstance(c.get("finish_reason"), str)]
    if not reasons and answer.get("object") == "response" and isinstance(answer.get("status"), str):
        reasons = [answer["status"]]
    if reasons:
        attributes[names.FINISH_REASONS] = reasons
    usage = usage_of(answer.get("usage"))
    if usage is not None:
        attributes[names.INPUT_TOKENS] = usage.input_tokens
        attributes[names.OUTPUT_TOKENS] = usage.output_tokens
    return attributes


def _identity(event: dict[str, Any]) -> dict[str, Any]:
    holder = event.get("response", event)  # a Responses stream event carries the response
    attributes = {}
    if isinstance(holder, dict):
        if isinstance(holder.get("model"), str):
            attributes[names.RESPONSE_MODEL] = holder["model"]
        if isinstance(holder.get("id"), str):
            attributes[names.RESPONSE_ID] = holder["id"]
    return attributes


def finish_stream(ctx: RequestContext, record: RequestRecord, attempt: Attempt) -> None:
    """End a stream's attempt, once: with what went by, and an error if the stream was broken off."""
    if record.streaming is not attempt:
        return
    record.streaming = None
    span = attempt.span
    if span is not None and span.is_recording():
        attributes: dict[str, Any] = {}
        if record.response_model:
            attributes[names.RESPONSE_MODEL] = record.response_model
        if record.response_id:
            attributes[names.RESPONSE_ID] = record.response_id
        if record.finish_reasons:
            attributes[names.FINISH_REASONS] = record.finish_reasons
        usage = usage_of(ctx.stream_usage)
        if usage is not None:
            attributes[names.INPUT_TOKENS] = usage.input_tokens
            attributes[names.OUTPUT_TOKENS] = usage.output_tokens
        span.set_attributes(attributes)
    error = ctx.error  # a 5xx error here is the upstream's stream broken off (a refusal by a later stage is not)
    _finish(attempt, 200, error.code or error.type if error is not None and error.status >= 500 else "")


def _finish(attempt: Attempt, status: int, error_type: str) -> None:
    attempt.seconds = time.perf_counter() - attempt.started
    attempt.status, attempt.error_type = status, error_type
    span = attempt.span
    if span is None:
        return
    if status:
        span.set_attribute(names.HTTP_STATUS, status)
    if error_type == "cancelled":
        span.set_attribute(names.CLIENT_DISCONNECTED, True)
    elif error_type:
        span.set_attribute(names.ERROR_TYPE, error_type)
        span.set_status(Status(StatusCode.ERROR))
    span.end()


def _error_type(exc: BaseException) -> str:
    if isinstance(exc, GatewayError):
        return exc.code or exc.type
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return type(exc).__qualname__


def _closing(close: Callable[[], None] | None, then: Callable[[], None]) -> Callable[[], None]:
    def closing() -> None:
        try:
            if close is not None:
                close()
        finally:
            then()

    return closing


class StreamTap:
    """The last stage (telemetry on): the time of a stream's first chunk as the client gets it, the model and id
    that chunk names, and the finish reasons of the later ones."""

    async def __call__(self, ctx: RequestContext) -> None:
        result = ctx.result
        if result is not None and not isinstance(result.body, bytes):
            result.body = _tap(record_of(ctx), result.body)


async def _tap(record: RequestRecord, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            if record.first_chunk is None:
                record.first_chunk = time.perf_counter()
                _first_event(record, chunk)
            if b'"finish_reason"' in chunk:
                record.finish_reasons.extend(m.decode() for m in FINISH_REASON.findall(chunk))
            yield chunk
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()


def _first_event(record: RequestRecord, chunk: bytes) -> None:
    for line in chunk.split(b"\n"):
        if line.startswith(b"data:") and line[5:].strip() != b"[DONE]":
            try:
                event = codec.loads(line[5:])
            except codec.JSONDecodeError:
                return
            identity = _identity(event) if isinstance(event, dict) else {}
            record.response_model = identity.get(names.RESPONSE_MODEL, "")
            record.response_id = identity.get(names.RESPONSE_ID, "")
            return
