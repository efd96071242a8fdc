"""The OpenAI-wire adapter builds the upstream request from the model's own settings, never the client's."""

from gateway.settings import Deployment
from gateway.upstream import openai_wire

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
RAW = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'
CLIENT = {"authorization": "Bearer gk-client", "openai-beta": "assistants=v2", "cookie": "c=1"}


def test_openai_upstreams_get_their_own_bearer_key_and_the_request_id() -> None:
    model = Deployment(model="m", provider="openai", base_url="https://api.example/v1", organization="org-1")
    request = openai_wire.build_request(model, "sk-up", "chat/completions", BODY, RAW, "rid", CLIENT)
    assert request.url == "https://api.example/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-up"
    assert request.headers["x-request-id"] == "rid"
    assert request.headers["openai-organization"] == "org-1"
    assert request.headers["openai-beta"] == "assistants=v2"
    assert "cookie" not in request.headers
    assert request.body is RAW


def test_azure_uses_api_key_header_and_api_version() -> None:
    model = Deployment(
        model="m", provider="azure", base_url="https://r.openai.azure.com/openai/v1", api_version="preview"
    )
    request = openai_wire.build_request(model, "az", "embeddings", BODY, RAW, "rid", {})
    assert request.url == "https://r.openai.azure.com/openai/v1/embeddings?api-version=preview"
    assert request.headers["api-key"] == "az" and "authorization" not in request.headers


def test_classic_azure_puts_the_deployment_in_the_path_with_an_api_version() -> None:
    deployment = Deployment(provider="azure", base_url="https://r.openai.azure.com", model="gpt4o-prod")
    request = openai_wire.build_request(deployment, "az", "chat/completions", BODY, RAW, "rid", {})
    assert request.url == (
        "https://r.openai.azure.com/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21"
    )
    assert request.headers["api-key"] == "az"
    pinned = Deployment(provider="azure", base_url="https://r.openai.azure.com", model="e", api_version="2025-01-01")
    assert openai_wire.url(pinned, "embeddings").endswith("/deployments/e/embeddings?api-version=2025-01-01")


def test_a_keyless_upstream_gets_no_authorization() -> None:
    model = Deployment(model="m", provider="ollama", base_url="http://127.0.0.1:11434/v1")
    assert "authorization" not in openai_wire.build_request(model, None, "chat/completions", BODY, RAW, "r", {}).headers


def test_an_aliased_model_is_renamed_in_the_body_only() -> None:
    model = Deployment(provider="vllm", base_url="http://h/v1", model="org/real")
    request = openai_wire.build_request(model, None, "chat/completions", BODY, RAW, "r", {})
    assert request.body == b'{"model":"org/real","messages":[{"role":"user","content":"hi"}]}'
    assert BODY["model"] == "m"


def test_scrub_blanks_an_echoed_upstream_key() -> None:
    assert openai_wire.scrub(b'{"m":"bad key sk-up"}', "sk-up") == b'{"m":"bad key ***"}'
    assert openai_wire.scrub(b"fine", None) == b"fine"
