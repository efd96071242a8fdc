"""Rate limits and budgets of a running gateway (Redis backend), seen through the official openai SDK:
429s with Retry-After and OpenAI's x-ratelimit-* headers, budget_exceeded that the SDK does not retry, soft
thresholds reported once (webhook), streams billed from a usage chunk the client did not ask for, abandoned
streams billed for what they produced, and GET /v1/gateway/usage."""

import http.server
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway import codec
from tests.conftest import create_key
from tests.redis_server import RedisServer
from tests.servers import UPSTREAM_SECRET, Mock, Process, free_port, gateway_command, start

# mock-model: 2 USD per 1M output tokens = 2 micro-USD per token; input is free, so a request capped at
# max_tokens=5 reserves exactly what it costs (the mock's answers are longer than 5 tokens): 10 micro-USD.
GATEWAY_YAML = """\
models:
  - name: mock-model
    provider: openai_compatible
    base_url: {mock}/v1
    api_key: env:TEST_UPSTREAM_KEY
    price: {{input: 0, output: 2.0}}
policies:
  dir: policies
  reload_interval: 0.2
limits:
  redis_url: {redis}
  webhook_url: http://127.0.0.1:{hook}/budget
audit:
  spool_dir: audit-spool
  run_shipper: false   # the events stay in the spool, where this test reads them
server:
  max_body_bytes: 65536
"""

POLICIES = """\
policies:
  - name: rates
    match: {teams: [rate]}
    rules:
      - {name: three-a-minute, kind: rate_limit, per: [key], rpm: 3}
  - name: tokens
    match: {teams: [tokens]}
    rules:
      - {name: small-tpm, kind: rate_limit, per: [team], tpm: 60, default_max_tokens: 10}
  - name: spend
    match: {teams: [spend, alerting, audited, resettable]}
    rules:
      - {name: tiny, kind: budget, per: [team], usd: 0.0001, period: day, alert_percent: [50]}
  - name: metered
    match: {teams: [metered]}
    rules:
      - {name: roomy, kind: budget, per: [key], usd: 10, period: month}
  - name: watching
    mode: shadow
    match: {teams: [shadowed]}
    rules:
      - {name: one-a-minute, kind: rate_limit, rpm: 1}
"""


@dataclass
class Hooks:
    """A loopback webhook receiver: every JSON body POSTed to it."""

    port: int
    received: list[dict[str, Any]] = field(default_factory=list)

    def serve(self) -> http.server.ThreadingHTTPServer:
        hooks = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                hooks.received.append(codec.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


@dataclass
class LimitsGateway:
    process: Process
    config: Path
    hooks: Hooks

    @property
    def base_url(self) -> str:
        return self.process.url + "/v1"

    def key(self, team: str) -> str:
        return create_key(self.config, "--team", team)

    def sdk(self, key: str, retries: int = 0) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=key, max_retries=retries, timeout=20)

    def events(self) -> list[dict[str, Any]]:
        """Every audit event in the spool (one JSON object per line, in .open and sealed segments)."""
        lines = []
        for path in sorted((self.config.parent / "audit-spool").iterdir()):
            if path.suffix in (".open", ".seg"):
                lines += [line for line in path.read_bytes().split(b"\n") if line.startswith(b"{")]
        return [codec.loads(line) for line in lines]

    def usage(self, key: str) -> dict[str, Any]:
        response = httpx.get(self.base_url + "/gateway/usage", headers={"authorization": f"Bearer {key}"})
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def limited(mock: Mock, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LimitsGateway]:
    redis_server.flush()
    folder = tmp_path_factory.mktemp("limits")
    (folder / "policies").mkdir()
    (folder / "policies" / "limits.yaml").write_text(POLICIES)
    hooks = Hooks(free_port())
    server = hooks.serve()
    config = folder / "gateway.yaml"
    config.write_text(GATEWAY_YAML.format(mock=mock.url, redis=redis_server.url, hook=hooks.port))
    env = {"TEST_UPSTREAM_KEY": UPSTREAM_SECRET}
    process = start(["-m", "gateway", "serve", "--config", str(config)], "/healthz", folder / "gateway.log", env)
    try:
        yield LimitsGateway(process, config, hooks)
    finally:
        process.stop()
        server.shutdown()
        server.server_close()


def ask(sdk: openai.OpenAI, text: str = "hello there how are you today", **extra: Any) -> Any:
    return sdk.chat.completions.with_raw_response.create(
        model="mock-model", messages=[{"role": "user", "content": text}], **extra
    )


def test_rpm_limit_answers_429_with_retry_after_and_openai_headers(limited: LimitsGateway, upstream: Mock) -> None:
    key = limited.key("rate")
    with limited.sdk(key) as sdk:
        remaining = []
        for _ in range(3):
            raw = ask(sdk)
            assert raw.headers["x-ratelimit-limit-requests"] == "3"
            remaining.append(raw.headers["x-ratelimit-remaining-requests"])
        assert remaining == ["2", "1", "0"]
        with pytest.raises(openai.RateLimitError) as caught:
            ask(sdk)
    response = caught.value.response
    assert 55 <= int(response.headers["retry-after"]) <= 60
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    error = response.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["policy"] == "rates" and error["rule"] == "three-a-minute"
    assert upstream.stats()["requests_total"] == 3


def test_another_key_has_its_own_rpm_counter(limited: LimitsGateway, upstream: Mock) -> None:
    first, second = limited.key("rate"), limited.key("rate")
    with limited.sdk(first) as a, limited.sdk(second) as b:
        for _ in range(3):
            ask(a)
        with pytest.raises(openai.RateLimitError):
            ask(a)
        assert ask(b).headers["x-ratelimit-remaining-requests"] == "2"


def test_tpm_admits_on_the_estimate_and_then_counts_real_usage(limited: LimitsGateway, upstream: Mock) -> None:
    key = limited.key("tokens")
    with limited.sdk(key) as sdk:
        raw = ask(sdk, "hi", max_tokens=40)
        assert raw.headers["x-ratelimit-limit-tokens"] == "60"
        admitted = 60 - int(raw.headers["x-ratelimit-remaining-tokens"])
        assert admitted > 40  # the prompt's tokens plus the 40 the answer may use
        real = raw.parse().usage.total_tokens
        assert real < admitted
        rows = limited.usage(key)["limits"]
        assert [(r["kind"], r["used"]) for r in rows] == [("tpm", real)]  # corrected to the real usage
        with pytest.raises(openai.RateLimitError) as caught:
            ask(sdk, "hi", max_tokens=100)  # can never fit in 60 tokens a minute
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert caught.value.response.json()["error"]["type"] == "tokens"


def test_budget_refuses_what_does_not_fit_and_the_sdk_does_not_retry(limited: LimitsGateway, upstream: Mock) -> None:
    key = limited.key("spend")
    with limited.sdk(key, retries=2) as sdk:  # the SDK retries 429s unless told not to
        for _ in range(10):
            assert ask(sdk, max_tokens=5).parse().usage.completion_tokens == 5
        with pytest.raises(openai.RateLimitError) as caught:
            ask(sdk, max_tokens=5)
    error = caught.value.response.json()["error"]
    assert error["code"] == "budget_exceeded" and error["type"] == "budget_exceeded" and error["rule"] == "tiny"
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert upstream.stats()["requests_total"] == 10
    budget = limited.usage(key)["budgets"][0]
    assert (budget["limit_usd"], budget["used_usd"], budget["remaining_usd"]) == ("0.000100", "0.000100", "0.000000")


def test_a_soft_threshold_is_reported_once_to_the_webhook(limited: LimitsGateway, upstream: Mock) -> None:
    limited.hooks.received.clear()
    key = limited.key("alerting")
    with limited.sdk(key) as sdk:
        for _ in range(10):
            ask(sdk, max_tokens=5)
    deadline = threading.Event()
    for _ in range(50):
        if limited.hooks.received:
            break
        deadline.wait(0.1)
    deadline.wait(0.5)  # a second (wrong) alert would arrive by now
    assert [(h["policy"], h["rule"], h["threshold_percent"]) for h in limited.hooks.received] == [("spend", "tiny", 50)]
    alert = limited.hooks.received[0]
    assert alert["scope"] == "team=alerting" and alert["spent_usd"] == "0.000050" and alert["limit_usd"] == "0.000100"
    recorded = [e for e in limited.events() if e["route"] == "gateway/budget_threshold"]
    details = [d["detail"] for e in recorded for d in e["decisions"]]
    assert [d for d in details if d.endswith("team=alerting")] == [
        "50% of 0.000100 USD " + alert["period"] + " team=alerting"
    ]
    assert [e["team"] for e in recorded if e["decisions"][0]["detail"].endswith("team=alerting")] == ["alerting"]


def test_audit_events_carry_tokens_cost_and_the_refusing_rule(limited: LimitsGateway, upstream: Mock) -> None:
    key = limited.key("audited")
    with limited.sdk(key) as sdk:
        ids = [ask(sdk, max_tokens=5).headers["x-request-id"] for _ in range(10)]
        with pytest.raises(openai.RateLimitError) as caught:
            ask(sdk, max_tokens=5)
    refused_id = caught.value.response.headers["x-request-id"]
    events = {e["request_id"]: e for e in limited.events()}
    assert [(events[i]["tokens_out"], events[i]["cost_micro_usd"]) for i in ids] == [(5, 10)] * 10
    refused = events[refused_id]
    assert refused["status"] == 429 and refused["error_code"] == "budget_exceeded"
    assert [(d["rule"], d["action"]) for d in refused["decisions"]] == [("tiny", "block")]


def test_admins_list_and_reset_budgets_with_the_cli(limited: LimitsGateway, upstream: Mock) -> None:
    key = limited.key("resettable")
    with limited.sdk(key) as sdk:
        ask(sdk, max_tokens=5)

    def rows() -> list[dict[str, Any]]:
        listing = gateway_command("budgets", "list", "--config", str(limited.config), "--json")
        assert listing.returncode == 0, listing.stderr
        return [r for r in codec.loads(listing.stdout) if r["scope"] == "team=resettable"]

    assert [(r["policy"], r["rule"], r["limit_usd"], r["spent_usd"], r["remaining_usd"]) for r in rows()] == [
        ("spend", "tiny", "0.000100", "0.000010", "0.000090")
    ]
    table = gateway_command("budgets", "list", "--config", str(limited.config))
    assert "spend/tiny" in table.stdout and "team=resettable" in table.stdout
    reset = gateway_command(
        "budgets", "reset", "--config", str(limited.config), "--policy", "spend", "--rule", "tiny",
        "--scope", "team=resettable",
    )  # fmt: skip
    assert reset.returncode == 0 and reset.stdout.strip() == "reset 1 budget counter(s)"
    assert rows() == []
    assert limited.usage(key)["budgets"][0]["used_usd"] == "0.000000"


def test_requests_the_middleware_refuses_are_audited_too(limited: LimitsGateway, upstream: Mock) -> None:
    key = limited.key("rate")
    url, auth = limited.base_url + "/chat/completions", {"authorization": f"Bearer {key}"}
    big = {"model": "mock-model", "messages": [{"role": "user", "content": "x" * 100_000}]}
    too_large = httpx.post(url, json=big, headers=auth)
    flood = {**auth, **{f"x-filler-{n}": "y" for n in range(150)}}
    too_many = httpx.post(url, json={"model": "mock-model", "messages": []}, headers=flood)
    assert (too_large.status_code, too_many.status_code) == (413, 431)
    events = {e["request_id"]: e for e in limited.events()}
    for response, code in ((too_large, "payload_too_large"), (too_many, "request_header_fields_too_large")):
        event = events[response.headers["x-request-id"]]
        assert (event["status"], event["error_code"], event["route"]) == (
            response.status_code,
            code,
            "chat/completions",
        )
        assert event["key_id"] == key.removeprefix("gk-").split(".")[0] and event["team"] == "rate"
    assert upstream.requests() == []


def test_streams_are_billed_from_a_usage_chunk_the_client_did_not_ask_for(
    limited: LimitsGateway, upstream: Mock
) -> None:
    key = limited.key("metered")
    with limited.sdk(key) as sdk:
        messages = [{"role": "user", "content": "one two three four five six seven"}]
        chunks = list(sdk.chat.completions.create(model="mock-model", messages=messages, stream=True))  # type: ignore[arg-type]
        asked = list(
            sdk.chat.completions.create(
                model="mock-model",
                messages=messages,  # type: ignore[arg-type]
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    assert all(chunk.usage is None for chunk in chunks) and all(chunk.choices for chunk in chunks)
    assert asked[-1].usage is not None and asked[-1].choices == []
    tokens = asked[-1].usage.completion_tokens
    sent = [r["body"] for r in upstream.requests()]
    assert all(body["stream_options"] == {"include_usage": True} for body in sent)
    # both streams were billed: 2 micro-USD per answer token
    assert limited.usage(key)["budgets"][0]["used_usd"] == f"0.{2 * 2 * tokens:06d}"


def test_an_abandoned_stream_is_charged_for_what_it_produced(limited: LimitsGateway, upstream: Mock) -> None:
    key = limited.key("metered")
    upstream.faults({"mock-model": {"chunk_delay_ms": 20}})
    text = " ".join(f"word{n}" for n in range(200))
    with limited.sdk(key) as sdk:
        stream = sdk.chat.completions.create(
            model="mock-model",
            messages=[{"role": "user", "content": text}],
            stream=True,
        )
        received = ""
        for chunk in stream:
            received += chunk.choices[0].delta.content or ""
            if len(received) > 60:
                break
        stream.close()
    deadline = threading.Event()
    used = "0.000000"
    for _ in range(50):
        used = limited.usage(key)["budgets"][0]["used_usd"]
        if used != "0.000000":
            break
        deadline.wait(0.1)
    spent = int(used.replace(".", ""))
    full = 2 * len(("Echo: " + text).split()) * 2  # the whole answer, generously counted
    assert 0 < spent < full // 4, (spent, full)
    assert upstream.stats()["streams_cancelled"] == 1


def test_shadow_limits_count_but_never_refuse(limited: LimitsGateway, upstream: Mock) -> None:
    key = limited.key("shadowed")
    with limited.sdk(key) as sdk:
        for _ in range(3):
            assert ask(sdk).http_response.status_code == 200
    rows = limited.usage(key)["limits"]
    assert [(r["kind"], r["used"], r["enforced"]) for r in rows] == [("rpm", 3, False)]


def test_usage_endpoint_needs_a_key(limited: LimitsGateway) -> None:
    response = httpx.get(limited.base_url + "/gateway/usage")
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"


def test_readyz_shows_the_limits_backend(limited: LimitsGateway) -> None:
    limits = httpx.get(limited.process.url + "/readyz").json()["limits"]
    assert limits["backend"] == "redis" and limits["connected"] is True and limits["pending_settlements"] == 0


def dedent(text: str) -> str:
    return textwrap.dedent(text)


def test_budgets_cli_without_redis_says_where_the_counts_are(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("models:\n  - {name: m, provider: vllm, base_url: http://127.0.0.1:9/v1}\n")
    result = gateway_command("budgets", "list", "--config", str(config))
    assert result.returncode == 2 and "GET /v1/gateway/usage" in result.stderr and "Traceback" not in result.stderr
