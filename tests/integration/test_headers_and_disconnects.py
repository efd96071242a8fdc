"""What crosses the gateway: credentials stay behind, request ids go through, abandoned streams are cancelled."""

import time

import httpx
import openai
import psutil

from tests.conftest import GatewayUnderTest
from tests.servers import UPSTREAM_SECRET, Mock

HELLO = [{"role": "user", "content": "hello"}]


def test_the_client_key_never_reaches_the_upstream(
    gateway: GatewayUnderTest, client: openai.OpenAI, upstream: Mock
) -> None:
    client.chat.completions.create(model="mock-model", messages=HELLO)
    headers = upstream.requests()[-1]["headers"]
    assert headers["authorization"] == f"Bearer {UPSTREAM_SECRET}"
    assert gateway.key not in str(headers)
    assert not any(name.startswith("x-stainless") for name in headers)


def test_request_id_from_the_client_goes_upstream_and_back(gateway: GatewayUnderTest, upstream: Mock) -> None:
    response = httpx.post(
        gateway.base_url + "/chat/completions",
        json={"model": "mock-model", "messages": HELLO},
        headers={"authorization": f"Bearer {gateway.key}", "x-request-id": "req-abc.123"},
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "req-abc.123"
    assert upstream.requests()[-1]["headers"]["x-request-id"] == "req-abc.123"


def test_a_request_id_is_generated_for_every_response_even_errors(gateway: GatewayUnderTest, upstream: Mock) -> None:
    ok = httpx.post(
        gateway.base_url + "/chat/completions",
        json={"model": "mock-model", "messages": HELLO},
        headers={"authorization": f"Bearer {gateway.key}"},
    )
    refused = httpx.post(gateway.base_url + "/chat/completions", json={})
    assert len(ok.headers["x-request-id"]) == 32 and len(refused.headers["x-request-id"]) == 32
    assert upstream.requests()[-1]["headers"]["x-request-id"] == ok.headers["x-request-id"]


def test_a_client_that_disconnects_mid_stream_cancels_the_upstream_stream(
    gateway: GatewayUnderTest, upstream: Mock
) -> None:
    upstream.faults({"mock-model": {"chunk_delay_ms": 200}})
    with openai.OpenAI(base_url=gateway.base_url, api_key=gateway.key, max_retries=0) as client:
        before = _connections_to(gateway, upstream)
        stream = client.chat.completions.create(
            model="mock-model", messages=[{"role": "user", "content": "word " * 50}], stream=True
        )
        first = next(iter(stream))
        assert first.choices[0].delta.role == "assistant"
        assert upstream.stats()["active_streams"] == 1
        stream.close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and upstream.stats()["active_streams"]:
            time.sleep(0.02)
        stats = upstream.stats()
        assert stats["active_streams"] == 0
        assert stats["streams_cancelled"] == 1 and stats["streams_completed"] == 0
        assert _connections_to(gateway, upstream) <= before


def _connections_to(gateway: GatewayUnderTest, upstream: Mock) -> int:
    process = psutil.Process(gateway.process.proc.pid)
    return sum(1 for c in process.net_connections("tcp") if c.raddr and c.raddr.port == upstream.process.port)
