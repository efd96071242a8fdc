"""The OpenAI-wire adapter: OpenAI, Azure OpenAI (v1 and classic), vLLM, Ollama and any OpenAI-compatible server.

Pure functions, no I/O: the request for one attempt is built anew from the original body each time, and
nothing of the client's own request (its key, its other headers) reaches the upstream but the body and
the request id.
"""

from collections.abc import Mapping
from urllib.parse import quote

from gateway import codec
from gateway.settings import Deployment
from gateway.upstream.client import UpstreamRequest

USER_AGENT = "ai-governance-gateway/0.1"
AZURE_API_VERSION = "2024-10-21"
PASSED_REQUEST_HEADERS = ("openai-beta",)
PASSED_RESPONSE_HEADERS = ("content-type", "openai-processing-ms", "openai-version")


def build_request(
    deployment: Deployment,
    secret: str | None,
    endpoint: str,
    body: Mapping[str, object],
    raw_body: bytes,
    request_id: str,
    client_headers: Mapping[str, str],
) -> UpstreamRequest:
    """The upstream request for `endpoint` (e.g. "chat/completions"), with the upstream's own credentials."""
    return UpstreamRequest(
        "POST",
        url(deployment, endpoint),
        _headers(deployment, secret, request_id, client_headers),
        _body(deployment, body, raw_body),
        deployment.timeout,
    )


def url(deployment: Deployment, endpoint: str) -> str:
    """Where `endpoint` lives. Azure OpenAI has two forms:

    - the v1 API, `base_url: https://RES.openai.azure.com/openai/v1`: OpenAI's paths (api-version optional);
    - the classic API, `base_url: https://RES.openai.azure.com`: the deployment in the path
      (`/openai/deployments/<model>/chat/completions`, `model` being the Azure deployment name) and an
      `api-version` query parameter (AZURE_API_VERSION unless the deployment sets `api_version`).
    """
    if deployment.provider != "azure":
        return f"{deployment.base_url}/{endpoint}"
    if deployment.base_url.endswith("/openai/v1"):
        query = f"?api-version={deployment.api_version}" if deployment.api_version else ""
        return f"{deployment.base_url}/{endpoint}{query}"
    version = deployment.api_version or AZURE_API_VERSION
    path = f"openai/deployments/{quote(deployment.upstream_model, safe='')}/{endpoint}"
    return f"{deployment.base_url}/{path}?api-version={version}"


def _body(deployment: Deployment, body: Mapping[str, object], raw_body: bytes) -> bytes:
    """The client's bytes as they came, unless the upstream knows the model by another name."""
    if body.get("model") == deployment.upstream_model:
        return raw_body
    return codec.dumps({**body, "model": deployment.upstream_model})


def _headers(deployment: Deployment, secret: str | None, request_id: str, client: Mapping[str, str]) -> dict[str, str]:
    headers = {
        "content-type": "application/json",
        "accept-encoding": "identity",
        "user-agent": USER_AGENT,
        "x-request-id": request_id,
    }
    if secret:
        if deployment.provider == "azure":
            headers["api-key"] = secret
        else:
            headers["authorization"] = f"Bearer {secret}"
    if deployment.organization:
        headers["openai-organization"] = deployment.organization
    if deployment.project:
        headers["openai-project"] = deployment.project
    for name in PASSED_REQUEST_HEADERS:
        if name in client:
            headers[name] = client[name]
    return headers


def response_headers(upstream: Mapping[str, str]) -> dict[str, str]:
    return {name: upstream[name] for name in PASSED_RESPONSE_HEADERS if name in upstream}


def scrub(body: bytes, secret: str | None) -> bytes:
    """An upstream error body with the upstream's key (should it echo it) blanked out."""
    if secret and secret.encode() in body:
        return body.replace(secret.encode(), b"***")
    return body


def stream_error_event(message: str, code: str) -> bytes:
    """The SSE event that ends a stream the upstream broke off: the SDKs raise it as an APIError."""
    error = {"error": {"message": message, "type": "server_error", "param": None, "code": code}}
    return b"data: " + codec.dumps(error) + b"\n\n"
