"""One model name, several deployments: failover order, retries, Retry-After, load spread, streams never doubled."""

import collections
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import create_key
from tests.servers import UPSTREAM_SECRET, Mock, Process, free_port, start

FAST_RETRIES = "retries: {attempts: 3, backoff: 0.01, max_backoff: 0.05, max_retry_after: 1}"
CONFIG = """\
models:
  - name: ha
    strategy: priority
    {retries}
    deployments:
      - {{name: primary, provider: openai_compatible, base_url: "{mock}/v1", model: ha-primary, api_key: env:K}}
      - {{name: backup, provider: vllm, base_url: "{mock}/v1", model: ha-backup, api_key: env:K}}
  - name: solo
    provider: openai_compatible
    base_url: "{mock}/v1"
    api_key: env:K
    {retries}
  - name: spread
    strategy: weighted
    deployments:
      - {{name: heavy, provider: openai_compatible, base_url: "{mock}/v1", model: spread-a, weight: 3, api_key: env:K}}
      - {{name: light, provider: openai_compatible, base_url: "{mock}/v1", model: spread-b, weight: 1, api_key: env:K}}
  - name: quick
    strategy: lowest_latency
    deployments:
      - {{name: slow, provider: openai_compatible, base_url: "{mock}/v1", model: quick-slow, api_key: env:K}}
      - {{name: fast, provider: openai_compatible, base_url: "{mock}/v1", model: quick-fast, api_key: env:K}}
  - name: secret
    provider: openai_compatible
    base_url: "{mock}/v1"
    api_key: {encrypted}
"""
HELLO = [{"role": "user", "content": "hello"}]
MASTER_KEY = "M2KnvDSh3sXQ0oVn5d7w2m6yT4B1mZkq1cXH5yQ3g1Y"


@pytest.fixture(scope="module")
def routed(mock: Mock, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Process, str, Path]]:
    folder = tmp_path_factory.mktemp("routed")
    encrypted = subprocess.run(
        [sys.executable, "-m", "gateway", "secrets", "encrypt"],
        input=UPSTREAM_SECRET,
        capture_output=True,
        text=True,
        env={"GATEWAY_MASTER_KEY": MASTER_KEY, "PATH": ""},
        check=True,
    ).stdout.strip()
    config = folder / "gateway.yaml"
    config.write_text(CONFIG.format(mock=mock.url, retries=FAST_RETRIES, encrypted=encrypted))
    key = create_key(config, "--team", "sre")
    env = {"K": UPSTREAM_SECRET, "GATEWAY_MASTER_KEY": MASTER_KEY}
    process = start(["-m", "gateway", "serve", "--config", str(config)], "/healthz", folder / "gateway.log", env)
    try:
        yield process, key, config
    finally:
        process.stop()


@pytest.fixture
def http(routed: tuple[Process, str, Path], upstream: Mock) -> Iterator[httpx.Client]:
    process, key, _ = routed
    with httpx.Client(base_url=process.url + "/v1", headers={"authorization": f"Bearer {key}"}, timeout=20) as client:
        yield client


def chat(http: httpx.Client, model: str, **extra: object) -> httpx.Response:
    return http.post("/chat/completions", json={"model": model, "messages": HELLO, **extra})


def upstream_models(upstream: Mock) -> list[str]:
    return [r["body"]["model"] for r in upstream.requests() if r["path"] == "/v1/chat/completions"]


def test_a_failing_primary_fails_over_to_the_backup(http: httpx.Client, upstream: Mock) -> None:
    upstream.faults({"ha-primary": {"status": 503}})
    response = chat(http, "ha")
    assert response.status_code == 200
    assert response.headers["x-gateway-deployment"] == "backup"
    assert response.headers["x-gateway-attempts"] == "2"
    assert upstream_models(upstream) == ["ha-primary", "ha-backup"]


def test_a_primary_that_drops_the_connection_fails_over(http: httpx.Client, upstream: Mock) -> None:
    upstream.faults({"ha-primary": {"disconnect": "before"}})
    response = chat(http, "ha")
    assert response.status_code == 200 and response.headers["x-gateway-deployment"] == "backup"


def test_a_healthy_primary_serves_alone(http: httpx.Client, upstream: Mock) -> None:
    response = chat(http, "ha")
    assert response.headers["x-gateway-deployment"] == "primary"
    assert response.headers["x-gateway-attempts"] == "1"
    assert upstream_models(upstream) == ["ha-primary"]


def test_a_client_error_is_not_retried(http: httpx.Client, upstream: Mock) -> None:
    upstream.faults({"ha-primary": {"status": 400}})
    response = chat(http, "ha")
    assert response.status_code == 400
    assert response.headers["x-gateway-attempts"] == "1"
    assert upstream_models(upstream) == ["ha-primary"]


def test_retry_after_is_honoured_on_the_same_deployment(http: httpx.Client, upstream: Mock) -> None:
    upstream.faults({"solo": {"status": 429, "retry_after": 0.3, "times": 1}})
    began = time.monotonic()
    response = chat(http, "solo")
    assert response.status_code == 200
    assert response.headers["x-gateway-attempts"] == "2"
    assert time.monotonic() - began >= 0.3


def test_a_retry_after_longer_than_allowed_is_passed_back_at_once(http: httpx.Client, upstream: Mock) -> None:
    upstream.faults({"solo": {"status": 429, "retry_after": 20}})
    began = time.monotonic()
    response = chat(http, "solo")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "20"
    assert response.headers["x-gateway-attempts"] == "1"
    assert time.monotonic() - began < 2


def test_when_every_attempt_fails_the_last_upstream_answer_is_returned(http: httpx.Client, upstream: Mock) -> None:
    upstream.faults({"solo": {"status": 502}})
    response = chat(http, "solo")
    assert response.status_code == 502
    assert response.headers["x-gateway-attempts"] == "3"
    assert upstream_models(upstream) == ["solo"] * 3


def test_weighted_load_lands_within_ten_percent_of_the_weights(http: httpx.Client, upstream: Mock) -> None:
    served = collections.Counter(chat(http, "spread").headers["x-gateway-deployment"] for _ in range(1000))
    assert served["heavy"] + served["light"] == 1000
    assert 0.675 <= served["heavy"] / 1000 <= 0.825  # 3:1 → 75 % ± 10 % of it


def test_lowest_latency_prefers_the_faster_deployment(http: httpx.Client, upstream: Mock) -> None:
    upstream.faults({"quick-slow": {"latency_ms": 150}})
    for _ in range(2):  # each deployment answers once, so both have a latency
        chat(http, "quick")
    served = {chat(http, "quick").headers["x-gateway-deployment"] for _ in range(10)}
    assert served == {"fast"}


def test_a_stream_fails_over_before_it_starts(routed: tuple[Process, str, Path], upstream: Mock) -> None:
    upstream.faults({"ha-primary": {"status": 500}})
    process, key, _ = routed
    with openai.OpenAI(base_url=process.url + "/v1", api_key=key, max_retries=0) as client:
        text = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(model="ha", messages=HELLO, stream=True)
            if c.choices
        )
    assert text == "Echo: hello"


def test_a_stream_broken_after_it_started_is_never_retried(routed: tuple[Process, str, Path], upstream: Mock) -> None:
    upstream.faults({"ha-primary": {"disconnect": "mid_stream", "after_chunks": 2}})
    process, key, _ = routed
    received = []
    with openai.OpenAI(base_url=process.url + "/v1", api_key=key, max_retries=0) as client:
        with pytest.raises(openai.APIError, match="broke off"):
            for chunk in client.chat.completions.create(model="ha", messages=HELLO, stream=True):
                received.append(chunk.choices[0].delta.content if chunk.choices else None)
    assert len(received) == 2
    assert upstream_models(upstream) == ["ha-primary"]


def test_an_encrypted_upstream_key_is_decrypted_for_the_upstream(http: httpx.Client, upstream: Mock) -> None:
    assert chat(http, "secret").status_code == 200
    assert upstream.requests()[-1]["headers"]["authorization"] == f"Bearer {UPSTREAM_SECRET}"


def test_a_wrong_master_key_is_a_clear_start_up_error(routed: tuple[Process, str, Path]) -> None:
    _, _, config = routed
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"K": UPSTREAM_SECRET, "GATEWAY_MASTER_KEY": "A" * 43, "PATH": ""},
    )
    assert result.returncode == 2
    assert "wrong GATEWAY_MASTER_KEY" in result.stderr
    assert UPSTREAM_SECRET not in result.stderr + result.stdout
