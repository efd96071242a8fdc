"""Pipeline stage: parse the request body once (orjson) and check the fields the gateway governs.

It runs after authentication, so a client without a valid key learns nothing about what it sent.
"""

from gateway import codec, validation
from gateway.errors import InvalidJSON
from gateway.pipeline import RequestContext


class ParseBody:
    async def __call__(self, ctx: RequestContext) -> None:
        try:
            body = codec.loads(ctx.raw_body)
        except codec.JSONDecodeError as exc:
            raise InvalidJSON(f"The request body is not valid JSON: {exc}.") from None
        ctx.body = validation.validate(ctx.endpoint, body)
