"""One model name, several deployments: failover order, retries, Retry-After, load spread, streams never doubled."""

import asyncio
import collections
import json
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
audit: false  # this module does not test the audit trail (on by default)
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
  - name: fragile
    provider: openai_compatible
    base_url: "{mock}/v1"
    api_key: env:K
    retries: {{attempts: 1}}
    breaker: {{failures: 3, cooldown: 0.5}}
  - name: small
    provider: openai_compatible
    base_url: "{mock}/v1"
    api_key: env:K
    retries: {{attempts: 1}}
    fallbacks: [backup-model]
    context_window_fallbacks: [large]
  - name: backup-model
    provider: openai_compatible
    base_url: "{mock}/v1"
    api_key: env:K
  - name: large
    provider: openai_compatible
    base_url: "{mock}/v1"
    api_key: env:K
  - name: best-effort
    provider: openai_compatible
    base_url: "{mock}/v1"
    api_key: env:K
    retries: {{attempts: 1}}
    default_response: {{content: "The assistant is unavailable right now; please try again later."}}
  - name: checked
    deployments:
      - {{name: sick, provider: vllm, base_url: "{mock}/sick", model: checked-a, api_key: env:K,
          health_check: {{path: /no-such-health, interval: 0.2, timeout: 1}}}}
      - {{name: well, provider: vllm, base_url: "{mock}/v1", model: checked-b, api_key: env:K,
          health_check: {{path: /health, interval: 0.2, timeout: 1}}}}
  - name: timed
    deployments:
      - {{name: slowpoke, provider: vllm, base_url: "{mock}/v1", model: timed-a, api_key: env:K,
          timeout: {{connect: 1, read: 0.3}}}}
      - {{name: spare, provider: vllm, base_url: "{mock}/v1", model: timed-b, api_key: env:K}}
  - name: capped
    deployments:
      - {{name: capped-a, provider: vllm, base_url: "{mock}/v1", model: capped-a, api_key: env:K, max_concurrent: 1}}
      - {{name: capped-b, provider: vllm, base_url: "{mock}/v1", model: capped-b, api_key: env:K}}
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


def test_the_breaker_opens_after_consecutive_failures_and_closes_after_a_good_probe(
    http: httpx.Client, upstream: Mock
) -> None:
    upstream.faults({"fragile": {"status": 500}})
    assert [chat(http, "fragile").status_code for _ in range(3)] == [500, 500, 500]
    refused = chat(http, "fragile")
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "no_deployment_available"
    assert len(upstream_models(upstream)) == 3  # the open breaker kept the 4th request from the upstream
    upstream.faults({})
    time.sleep(0.6)  # cool-down over: one half-open probe goes through, succeeds, and closes the breaker
    assert [chat(http, "fragile").status_code for _ in range(3)] == [200, 200, 200]


def test_a_failed_half_open_probe_reopens_the_breaker(http: httpx.Client, upstream: Mock) -> None:
    upstream.faults({"fragile": {"status": 500}})
    for _ in range(3):
        chat(http, "fragile")
    time.sleep(0.6)
    assert chat(http, "fragile").status_code == 500  # the probe
    assert chat(http, "fragile").status_code == 503  # open again
    upstream.faults({})
    time.sleep(0.6)
    assert chat(http, "fragile").status_code == 200


def test_a_model_that_fails_falls_back_to_another_model(http: httpx.Client, upstream: Mock) -> None:
    upstream.faults({"small": {"status": 503}})
    response = chat(http, "small")
    assert response.status_code == 200
    assert response.headers["x-gateway-fallback"] == "backup-model"
    assert upstream_models(upstream) == ["small", "backup-model"]


def test_a_context_window_error_falls_back_to_the_larger_model(http: httpx.Client, upstream: Mock) -> None:
    too_long = {"error": {"message": "maximum context length is 8192 tokens", "type": "invalid_request_error",
                          "param": "messages", "code": "context_length_exceeded"}}  # fmt: skip
    upstream.faults({"small": {"status": 400, "body": too_long}})
    response = chat(http, "small")
    assert response.status_code == 200
    assert response.headers["x-gateway-fallback"] == "large"
    assert upstream_models(upstream) == ["small", "large"]


def test_when_everything_fails_the_default_response_answers(routed: tuple[Process, str, Path], upstream: Mock) -> None:
    upstream.faults({"best-effort": {"disconnect": "before"}})
    process, key, _ = routed
    with openai.OpenAI(base_url=process.url + "/v1", api_key=key, max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(model="best-effort", messages=HELLO)
        answer = raw.parse()
        streamed = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(model="best-effort", messages=HELLO, stream=True)
            if c.choices
        )
    assert raw.headers["x-gateway-degraded"] == "default_response"
    assert answer.choices[0].message.content == streamed
    assert streamed.startswith("The assistant is unavailable")


def test_a_deployment_failing_its_health_check_is_skipped(http: httpx.Client, upstream: Mock) -> None:
    time.sleep(0.5)  # a few probe rounds
    served = {chat(http, "checked").headers["x-gateway-deployment"] for _ in range(5)}
    assert served == {"well"}
    assert "checked-a" not in upstream_models(upstream)


def test_the_default_response_and_its_stream_chunks_match_openai_spec(http: httpx.Client, upstream: Mock) -> None:
    from tests.integration.test_bodies_match_openai_spec import validator

    upstream.faults({"best-effort": {"status": 503}})
    body = chat(http, "best-effort").json()
    assert list(validator("CreateChatCompletionResponse").iter_errors(body)) == []
    with http.stream(
        "POST", "/chat/completions", json={"model": "best-effort", "messages": HELLO, "stream": True}
    ) as r:
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ") and line != "data: [DONE]"]
    chunk_validator = validator("CreateChatCompletionStreamResponse")
    assert events and all(list(chunk_validator.iter_errors(json.loads(e))) == [] for e in events)


def test_a_deployment_at_its_concurrency_cap_is_skipped(routed: tuple[Process, str, Path], upstream: Mock) -> None:
    upstream.faults({"capped-a": {"latency_ms": 300}})
    process, key, _ = routed

    async def two_at_once() -> set[str]:
        async with httpx.AsyncClient(base_url=process.url + "/v1", headers={"authorization": f"Bearer {key}"}) as c:
            body = {"model": "capped", "messages": HELLO}
            answers = await asyncio.gather(*(c.post("/chat/completions", json=body) for _ in range(2)))
        return {a.headers["x-gateway-deployment"] for a in answers}

    assert asyncio.run(two_at_once()) == {"capped-a", "capped-b"}


def test_a_deployment_slower_than_its_timeout_fails_over(http: httpx.Client, upstream: Mock) -> None:
    upstream.faults({"timed-a": {"hang": True}})
    began = time.monotonic()
    response = chat(http, "timed")
    assert response.status_code == 200
    assert response.headers["x-gateway-deployment"] == "spare"
    assert time.monotonic() - began < 2
