"""The Anthropic adapter: OpenAI chat completions served by Anthropic's Messages API, both ways, streams too.

    build_request   POST {base_url}/messages with x-api-key and anthropic-version; body: anthropic_request
    response_body   a Message → chat.completion; an error → OpenAI's error JSON, status kept (anthropic_response)
    stream          Anthropic's events → chat.completion.chunk events; usage chunk if asked for (anthropic_stream)

Only /v1/chat/completions is served: the Forward stage answers a 400 for other endpoints of such a model.
`base_url` is the API root with its version path, e.g. https://api.anthropic.com/v1, and `api_version` sets
the `anthropic-version` header (2023-06-01 by default). Nothing of the client's own request but the body and
the request id reaches Anthropic: the deployment's key goes in `x-api-key`, and there is no Authorization.
Like every adapter it does no I/O, and builds each attempt's request anew from the client's unchanged body.
"""

import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from gateway import codec
from gateway.settings import Deployment
from gateway.upstream import anthropic_request, anthropic_response, anthropic_stream
from gateway.upstream.client import UpstreamRequest
from gateway.upstream.openai_wire import USER_AGENT

if TYPE_CHECKING:  # adapters.py imports this module to list it; Call is only needed for the annotation
    from gateway.upstream.adapters import Call

DEFAULT_VERSION = "2023-06-01"


class Anthropic:
    """Anthropic's Messages API behind the OpenAI chat completions endpoint."""

    def supports(self, endpoint: str) -> bool:
        return endpoint == "chat/completions"

    def build_request(self, deployment: Deployment, secret: str | None, call: "Call") -> UpstreamRequest:
        return build_request(deployment, secret, call.body, call.request_id)

    def response_body(self, status: int, body: bytes) -> bytes:
        return anthropic_response.answer_body(status, body, int(time.time()))

    def stream(self, chunks: AsyncIterator[bytes], call: "Call") -> AsyncIterator[bytes]:
        options = call.body.get("stream_options") or {}
        include_usage = isinstance(options, Mapping) and options.get("include_usage") is True
        return anthropic_stream.translate(chunks, int(time.time()), include_usage)


def build_request(
    deployment: Deployment, secret: str | None, body: Mapping[str, Any], request_id: str
) -> UpstreamRequest:
    """The Messages API request for the chat completion `body`, with the deployment's own credentials."""
    messages = anthropic_request.messages_body(body, deployment.upstream_model)
    return UpstreamRequest(
        "POST",
        f"{deployment.base_url}/messages",
        headers(deployment, secret, request_id),
        codec.dumps(messages),
        deployment.timeout,
    )


def headers(deployment: Deployment, secret: str | None, request_id: str) -> dict[str, str]:
    out = {
        "content-type": "application/json",
        "accept-encoding": "identity",
        "user-agent": USER_AGENT,
        "anthropic-version": deployment.api_version or DEFAULT_VERSION,
        "x-request-id": request_id,
    }
    if secret:
        out["x-api-key"] = secret
    return out
