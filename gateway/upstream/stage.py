"""Pipeline stage 6: send the request to the model's upstream and pass its answer through.

A JSON answer is read whole. A stream is handed on as an async iterator of the upstream's bytes; if the
upstream breaks off mid-stream, the client gets an error event rather than a silently truncated answer.
An upstream 4xx/5xx is passed through with its status and body.
"""

from collections.abc import AsyncIterator, Mapping

from gateway.errors import GatewayError
from gateway.pipeline import RequestContext, Result
from gateway.upstream import openai_wire
from gateway.upstream.client import UpstreamClient, UpstreamResponse


class Forward:
    def __init__(self, client: UpstreamClient, secrets: Mapping[str, str | None]) -> None:
        self.client = client
        self.secrets = secrets

    async def __call__(self, ctx: RequestContext) -> None:
        assert ctx.model is not None
        secret = self.secrets.get(ctx.model.name)
        request = openai_wire.build_request(
            ctx.model, secret, ctx.endpoint, ctx.body, ctx.raw_body, ctx.request_id, ctx.headers
        )
        ctx.attempts += 1
        response = await self.client.send(request)
        headers = openai_wire.response_headers(response.headers)
        if ctx.stream and response.status == 200:
            ctx.result = Result(200, headers, _relay(ctx, response), response.close)
            return
        body = await response.read()
        if response.status >= 400:
            body = openai_wire.scrub(body, secret)
        ctx.result = Result(response.status, headers, body)


async def _relay(ctx: RequestContext, response: UpstreamResponse) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.iter_bytes():
            yield chunk
    except GatewayError as exc:
        ctx.error = exc
        yield openai_wire.stream_error_event(f"The model server broke off the stream: {exc.message}", exc.code or "")
