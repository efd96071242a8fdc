"""Provider adapters: one per wire format, pure translators between the OpenAI API clients speak and a provider's.

    supports(endpoint)                       whether the provider serves this OpenAI endpoint
    build_request(deployment, secret, call)  the provider request for one attempt, built anew each time
    response_body(status, body)              the provider's JSON answer or error, as OpenAI JSON
    stream(chunks, call)                     the provider's event stream, as OpenAI SSE bytes

No adapter does I/O: the Forward stage sends what `build_request` returns and feeds the answer back through
the adapter. The OpenAI-wire adapter passes bodies through untouched.
"""

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.settings import Deployment
from gateway.upstream import openai_wire
from gateway.upstream.anthropic import Anthropic
from gateway.upstream.client import UpstreamRequest


@dataclass(frozen=True, slots=True)
class Call:
    """What an attempt needs of the client's request; the original is never changed."""

    endpoint: str
    body: Mapping[str, Any]
    raw_body: bytes
    request_id: str
    client_headers: Mapping[str, str]


class Adapter(Protocol):
    def supports(self, endpoint: str) -> bool: ...

    def build_request(self, deployment: Deployment, secret: str | None, call: Call) -> UpstreamRequest: ...

    def response_body(self, status: int, body: bytes) -> bytes: ...

    def stream(self, chunks: AsyncIterator[bytes], call: Call) -> AsyncIterator[bytes]: ...


class OpenAIWire:
    """OpenAI, Azure OpenAI, vLLM, Ollama and every OpenAI-compatible server: everything passes through."""

    def supports(self, endpoint: str) -> bool:
        return True

    def build_request(self, deployment: Deployment, secret: str | None, call: Call) -> UpstreamRequest:
        return openai_wire.build_request(
            deployment, secret, call.endpoint, call.body, call.raw_body, call.request_id, call.client_headers
        )

    def response_body(self, status: int, body: bytes) -> bytes:
        return body

    def stream(self, chunks: AsyncIterator[bytes], call: Call) -> AsyncIterator[bytes]:
        return chunks


def adapters() -> dict[str, Adapter]:
    """The adapter for each provider name of gateway.yaml."""
    wire = OpenAIWire()
    wired: dict[str, Adapter] = {name: wire for name in ("openai", "azure", "vllm", "ollama", "openai_compatible")}
    return {**wired, "anthropic": Anthropic()}
