"""Traces and metrics of a running gateway, as a collector and a Prometheus scraper get them: a real OTLP/HTTP
exporter sends to a loopback receiver that decodes the protobuf payloads, the traffic goes through the official
openai SDK, the mock upstream records the traceparent it got; and with telemetry off, nothing of it is built."""

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway import settings as settings_module
from gateway import yamlconf
from tests.conftest import create_key
from tests.otlp_receiver import CLIENT, ERROR, INTERNAL, SERVER, OtlpReceiver, Point, ReceivedSpan
from tests.servers import UPSTREAM_SECRET, Mock, Process, start

METRICS_TOKEN = "scrape-" + secrets.token_hex(8)
MODELS = """\
models:
  - name: gpt-4o-mini
    provider: openai
    base_url: {mock}/v1
    api_key: env:TEST_UPSTREAM_KEY
    price: {{input: 1, output: 2}}
  - name: flaky
    provider: openai_compatible
    base_url: {mock}/v1
    api_key: env:TEST_UPSTREAM_KEY
    model: flaky-fail503
    retries: {{attempts: 2, backoff: 0.01, max_backoff: 0.02}}
    breaker: {{failures: 1000}}
    fallbacks: [gpt-4o-mini]
  - name: counted-flaky
    deployments:
      - name: counted-primary
        provider: vllm
        base_url: "{mock}/v1"
        model: counted-fail502
        api_key: env:TEST_UPSTREAM_KEY
    retries: {{attempts: 2, backoff: 0.01, max_backoff: 0.02}}
    breaker: {{failures: 1000}}
    fallbacks: [gpt-4o-mini]
  - name: slow-stream
    provider: openai_compatible
    base_url: {mock}/v1
    api_key: env:TEST_UPSTREAM_KEY
    model: slowstream
"""
GATEWAY_YAML = (
    MODELS
    + """\
policies: {{dir: policies, reload_interval: 0.2}}
audit: {{spool_dir: audit-spool, run_shipper: false}}
pii: {{spacy_model: null, processes: 1}}
telemetry:
  tracing: true
  metrics: true
  prometheus: true
  prometheus_token: env:TEST_METRICS_TOKEN
  otlp_endpoint: {otlp}
  metrics_interval: 0.3
  traces_delay: 0.1
"""
)
POLICIES = """\
policies:
  - name: main
    rules:
      - {name: no-zebras, kind: terms, terms: [zebra], message: "Zebras are not allowed here."}
      - {name: no-walruses, kind: terms, terms: [walrus]}
      - {name: lions-warned, kind: terms, terms: [lion], action: warn}
      - {name: emails, kind: pii, entities: {EMAIL_ADDRESS: mask}}
"""


@dataclass
class Observed:
    process: Process
    config: Path
    receiver: OtlpReceiver
    key: str

    def sdk(self, key: str | None = None) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.process.url + "/v1", api_key=key or self.key, max_retries=0, timeout=20)

    def trace_of(self, request_id: str, *, until: str = "stage Audit") -> list[ReceivedSpan]:
        """The spans of the request's trace, once its server span and the span named `until` have arrived."""

        def complete() -> list[ReceivedSpan] | None:
            spans = self.receiver.spans()
            server = [s for s in spans if s.kind == SERVER and s.attributes.get("gateway.request_id") == request_id]
            if not server:
                return None
            trace = [s for s in spans if s.trace_id == server[0].trace_id]
            return trace if any(s.name == until for s in trace) else None

        return self.receiver.wait(complete)

    def scrape(self, token: str | None = METRICS_TOKEN) -> httpx.Response:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.get(self.process.url + "/metrics", headers=headers, timeout=10)


@pytest.fixture(scope="module")
def observed(mock: Mock, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    folder = tmp_path_factory.mktemp("telemetry")
    (folder / "policies").mkdir()
    (folder / "policies" / "main.yaml").write_text(POLICIES)
    with OtlpReceiver() as receiver:
        config = folder / "gateway.yaml"
        config.write_text(GATEWAY_YAML.format(mock=mock.url, otlp=receiver.url))
        key = create_key(config, "--team", "platform")
        env = {"TEST_UPSTREAM_KEY": UPSTREAM_SECRET, "TEST_METRICS_TOKEN": METRICS_TOKEN}
        process = start(["-m", "gateway", "serve", "--config", str(config)], "/healthz", folder / "gateway.log", env)
        try:
            deadline = time.monotonic() + 60
            while not httpx.get(process.url + "/readyz").json()["pii"]["ready"]:  # the analyzer pool is up
                assert time.monotonic() < deadline, process.output()
                time.sleep(0.1)
            yield Observed(process, config, receiver, key)
        finally:
            process.stop()


def by_name(spans: list[ReceivedSpan]) -> dict[str, list[ReceivedSpan]]:
    named: dict[str, list[ReceivedSpan]] = {}
    for span in sorted(spans, key=lambda s: s.start):
        named.setdefault(span.name, []).append(span)
    return named


def traceparent_parts(header: str) -> tuple[str, str]:
    version, trace_id, span_id, flags = header.split("-")
    assert version == "00" and int(flags, 16) & 1  # sampled (the SDK may also set the "random trace id" bit)
    return trace_id, span_id


def test_a_request_is_one_trace_with_a_span_per_stage_and_the_upstream_call(observed: Observed, upstream: Mock) -> None:
    with observed.sdk() as sdk:
        answer = sdk.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hello there"}],
            max_tokens=50,
            extra_headers={"x-request-id": "telemetry-plain"},
        )
    assert answer.usage is not None
    spans = observed.trace_of("telemetry-plain")
    named = by_name(spans)
    (server,) = named["POST /v1/chat/completions"]
    assert server.kind == SERVER and server.parent_id == ""
    assert server.attributes["http.request.method"] == "POST"
    assert server.attributes["http.route"] == "/v1/chat/completions"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["gateway.team"] == "platform"
    assert server.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert server.resource["service.name"] == "ai-governance-gateway"
    stages = [s.name for s in sorted(spans, key=lambda s: s.start) if s.name.startswith("stage ")]
    assert stages[:5] == ["stage AuditAdmission", "stage Authenticate", "stage ParseBody", "stage ResolveModel",
                          "stage ResolvePolicy"]  # fmt: skip
    assert {"stage CheckInput", "stage Redact", "stage Forward", "stage CheckOutput", "stage Settle"} <= set(stages)
    assert stages[-2:] == ["stage Settle", "stage Audit"]
    assert all(named[name][0].parent_id == server.span_id and named[name][0].kind == INTERNAL for name in stages)
    (call,) = [s for s in spans if s.kind == CLIENT]
    assert call.name == "chat gpt-4o-mini"
    assert call.parent_id == named["stage Forward"][0].span_id
    assert call.attributes["gen_ai.operation.name"] == "chat"
    assert call.attributes["gen_ai.provider.name"] == call.attributes["gen_ai.system"] == "openai"
    assert call.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert call.attributes["gen_ai.request.max_tokens"] == 50
    assert call.attributes["gen_ai.response.model"] == answer.model
    assert call.attributes["gen_ai.response.id"] == answer.id
    assert call.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert call.attributes["gen_ai.usage.input_tokens"] == answer.usage.prompt_tokens
    assert call.attributes["gen_ai.usage.output_tokens"] == answer.usage.completion_tokens
    assert call.attributes["server.address"] == "127.0.0.1"
    assert call.status != ERROR
    (sent,) = upstream.requests()
    assert traceparent_parts(sent["headers"]["traceparent"]) == (server.trace_id, call.span_id)
    assert sent["headers"]["authorization"] == f"Bearer {UPSTREAM_SECRET}"  # the trace headers are all that is added


def test_a_stream_s_upstream_span_covers_the_stream_and_carries_its_usage(observed: Observed, upstream: Mock) -> None:
    with observed.sdk() as sdk:
        chunks = list(
            sdk.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "stream this please"}],
                stream=True,
                stream_options={"include_usage": True},
                extra_headers={"x-request-id": "telemetry-stream"},
            )
        )
    usage = chunks[-1].usage
    assert usage is not None
    named = by_name(observed.trace_of("telemetry-stream"))
    (call,) = named["chat gpt-4o-mini"]
    assert call.attributes["gen_ai.request.stream"] is True
    assert call.attributes["gen_ai.response.id"] == chunks[0].id
    assert call.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert call.attributes["gen_ai.usage.input_tokens"] == usage.prompt_tokens
    assert call.attributes["gen_ai.usage.output_tokens"] == usage.completion_tokens
    assert call.end > named["stage Forward"][0].end  # the answer streams on after the stage handed it over
    (sent,) = upstream.requests()
    assert traceparent_parts(sent["headers"]["traceparent"])[1] == call.span_id


def test_a_blocked_request_is_traced_to_the_rule_and_still_settled_and_audited(observed: Observed) -> None:
    with observed.sdk() as sdk, pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "a zebra"}],
            extra_headers={"x-request-id": "telemetry-blocked"},
        )
    spans = observed.trace_of("telemetry-blocked")
    named = by_name(spans)
    server = named["POST /v1/chat/completions"][0]
    assert server.attributes["http.response.status_code"] == 400
    assert server.attributes["gateway.policy.decisions"] == ["main/no-zebras:block"]
    assert server.attributes["error.type"] == "policy_violation"
    assert server.status != ERROR  # a refusal is the client's 4xx, not a failure of the gateway
    assert named["stage CheckInput"][0].attributes["error.type"] == "policy_violation"
    assert "stage Forward" not in named and not [s for s in spans if s.kind == CLIENT]
    assert {"stage Settle", "stage Audit"} <= set(named)


def test_retries_and_the_fallback_are_one_upstream_span_each_in_the_same_trace(
    observed: Observed, upstream: Mock
) -> None:
    with observed.sdk() as sdk:
        raw = sdk.chat.completions.with_raw_response.create(
            model="flaky",
            messages=[{"role": "user", "content": "fall back"}],
            extra_headers={"x-request-id": "telemetry-fallback"},
        )
    assert raw.headers["x-gateway-fallback"] == "gpt-4o-mini"
    spans = observed.trace_of("telemetry-fallback")
    forward = by_name(spans)["stage Forward"][0]
    calls = sorted((s for s in spans if s.kind == CLIENT), key=lambda s: s.start)
    assert [c.name for c in calls] == ["chat flaky-fail503", "chat flaky-fail503", "chat gpt-4o-mini"]
    assert all(c.parent_id == forward.span_id for c in calls)
    assert [c.attributes["gateway.attempt"] for c in calls] == [1, 2, 3]
    for failed in calls[:2]:
        assert failed.status == ERROR
        assert failed.attributes["error.type"] == "503"
        assert failed.attributes["gen_ai.provider.name"] == "openai_compatible"
    assert calls[2].status != ERROR and calls[2].attributes["gen_ai.provider.name"] == "openai"
    sent = [traceparent_parts(r["headers"]["traceparent"]) for r in upstream.requests()]
    assert sent == [(forward.trace_id, c.span_id) for c in calls]


def test_the_client_s_traceparent_is_continued(observed: Observed) -> None:
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    with observed.sdk() as sdk:
        sdk.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "joined"}],
            extra_headers={"x-request-id": "telemetry-joined", "traceparent": f"00-{trace_id}-{parent}-01"},
        )
    server = by_name(observed.trace_of("telemetry-joined"))["POST /v1/chat/completions"][0]
    assert (server.trace_id, server.parent_id) == (trace_id, parent)


def test_a_client_that_hangs_up_mid_stream_still_gets_its_settle_and_audit_spans(
    observed: Observed, upstream: Mock
) -> None:
    upstream.faults({"slowstream": {"chunk_delay_ms": 300}})
    body = {"model": "slow-stream", "stream": True, "messages": [{"role": "user", "content": "one two three four"}]}
    headers = {"authorization": f"Bearer {observed.key}", "x-request-id": "telemetry-gone"}
    with (
        httpx.Client(timeout=10) as client,
        client.stream("POST", observed.process.url + "/v1/chat/completions", json=body, headers=headers) as reply,
    ):
        assert reply.status_code == 200
        next(reply.iter_bytes())  # the first chunk, then the client goes away
    named = by_name(observed.trace_of("telemetry-gone"))
    assert named["POST /v1/chat/completions"][0].attributes["gateway.client_disconnected"] is True
    assert {"stage Settle", "stage Audit"} <= set(named)
    (call,) = named["chat slowstream"]
    assert call.status != ERROR


def points(receiver: OtlpReceiver, name: str, **wanted: object) -> list[Point]:
    return [p for p in receiver.metric(name) if all(p.attributes.get(k) == v for k, v in wanted.items())]


def test_metrics_count_requests_tokens_cost_blocks_pii_and_upstream_errors(observed: Observed, upstream: Mock) -> None:
    config = observed.config
    team_key = create_key(config, "--team", "analytics")
    usages = []
    with observed.sdk(team_key) as sdk:
        for text in ("first question", "second, with a lion", "write to ada@example.com"):
            answer = sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": text}])
            usages.append(answer.usage)
        stream = sdk.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "a streamed one"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        usages.append(list(stream)[-1].usage)
        fallback = sdk.chat.completions.create(model="counted-flaky", messages=[{"role": "user", "content": "x y"}])
        with pytest.raises(openai.BadRequestError):
            sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "walrus"}])
    assert all(usages) and fallback.usage is not None
    team = {"gateway.team": "analytics"}
    receiver = observed.receiver

    def requests_counted() -> list[Point] | None:
        found = points(receiver, "gateway.requests", **team)
        return found if sum(p.value or 0 for p in found) == 6 else None

    receiver.wait(requests_counted)
    receiver.settle_metrics()  # an export may have caught the last request half recorded: take a later one
    counted = {(p.attributes["gen_ai.request.model"], p.attributes["http.response.status_code"]): p.value
               for p in points(receiver, "gateway.requests", **team)}  # fmt: skip
    assert counted == {("gpt-4o-mini", 200): 4, ("gpt-4o-mini", 400): 1, ("counted-flaky", 200): 1}
    inputs = sum(u.prompt_tokens for u in usages) + fallback.usage.prompt_tokens  # type: ignore[union-attr]
    outputs = sum(u.completion_tokens for u in usages) + fallback.usage.completion_tokens  # type: ignore[union-attr]
    tokens = {"input": 0.0, "output": 0.0}
    for point in points(receiver, "gen_ai.client.token.usage", **team):
        tokens[point.attributes["gen_ai.token.type"]] += point.sum or 0
    assert tokens == {"input": inputs, "output": outputs}
    cost = sum(p.value or 0 for p in points(receiver, "gateway.cost", **team))
    assert cost == inputs * 1 + outputs * 2  # USD 1 and 2 per 1M tokens: one and two micro-dollars a token
    (first_token,) = points(receiver, "gen_ai.server.time_to_first_token", **team)
    assert first_token.count == 1 and first_token.sum is not None and first_token.sum > 0
    decided = {tuple(p.attributes[k] for k in ("gateway.rule", "gateway.action", "gateway.rule.where")): p.value
               for p in receiver.metric("gateway.policy.decisions")}  # fmt: skip
    assert decided[("no-walruses", "block", "input")] == 1
    assert decided[("lions-warned", "warn", "input")] == 1
    assert decided[("lions-warned", "warn", "output")] == 1  # the echo has the lion too
    assert decided[("emails", "redact", "input")] == 1
    (emails,) = points(receiver, "gateway.pii.detections", **{"gateway.pii.entity": "EMAIL_ADDRESS"})
    assert (emails.attributes["gateway.action"], emails.value) == ("mask", 1)
    (errors,) = points(receiver, "gateway.upstream.errors", **{"gateway.deployment": "counted-primary"})
    assert (errors.attributes["error.type"], errors.value) == ("502", 2)
    (durations,) = points(receiver, "gen_ai.client.operation.duration", **{"gateway.deployment": "counted-primary"})
    assert durations.count == 2 and durations.attributes["gen_ai.provider.name"] == "vllm"
    assert receiver.metric("gateway.audit.spool_bytes")[0].value > 0  # type: ignore[operator]
    assert receiver.metric("gateway.audit.spool_segments")[0].value >= 1  # type: ignore[operator]
    assert receiver.metric("gateway.audit.lost_events")[0].value == 0


def test_metrics_endpoint_answers_scrapers_with_the_token_in_prometheus_text_format(observed: Observed) -> None:
    key = create_key(observed.config, "--team", "scraped")
    with observed.sdk(key) as sdk:
        for _ in range(2):
            sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "count me"}])
    assert observed.scrape(token=None).status_code == 401
    assert observed.scrape(token="wrong").status_code == 401
    reply = observed.scrape()
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {family.name: family for family in text_string_to_metric_families(reply.text)}
    assert families["gateway_audit_spool_bytes"].type == "gauge"
    assert families["gateway_audit_spool_bytes"].samples[0].value > 0
    assert families["gateway_audit_spool_segments"].type == "gauge"
    assert families["gateway_audit_spool_segments"].samples[0].value >= 1
    lost = families["gateway_audit_lost_events"]
    assert lost.type == "counter"
    assert [(s.name, s.value) for s in lost.samples if s.name.endswith("_total")] == [
        ("gateway_audit_lost_events_total", 0)
    ]
    scraped = [s for s in families["gateway_requests"].samples if s.labels.get("gateway_team") == "scraped"]
    assert [(s.name, s.labels["http_response_status_code"], s.value) for s in scraped] == [
        ("gateway_requests_total", "200", 2)
    ]
    assert "gen_ai_server_request_duration_seconds" in families
    assert "gen_ai_client_token_usage" in families


def test_with_several_workers_every_scrape_adds_up_all_workers(mock: Mock, tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    extra = "audit: false\ntelemetry: {prometheus: true, prometheus_public: true}\n"
    config.write_text(MODELS.format(mock=mock.url) + extra)
    key = create_key(config, "--team", "workers")
    args = ["-m", "gateway", "serve", "--config", str(config), "--workers", "2"]
    process = start(args, "/healthz", tmp_path / "gateway.log", {"TEST_UPSTREAM_KEY": UPSTREAM_SECRET})
    try:
        served = 0
        files: set[str] = set()
        while len(files) < 2:  # until both workers have served (each has its histogram file then)
            assert served < 400, f"one worker served all {served} requests"
            for _ in range(10):
                body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
                reply = httpx.post(
                    process.url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
                )
                assert reply.status_code == 200
                served += 1
            files = _worker_histogram_files(process)
        for _ in range(6):  # new connections: the scrapes land on either worker
            families = text_string_to_metric_families(httpx.get(process.url + "/metrics").text)
            counted = {f.name: f for f in families}["gateway_requests"]
            assert sum(s.value for s in counted.samples if s.name == "gateway_requests_total") == served
    finally:
        process.stop()


def _worker_histogram_files(process: Process) -> set[str]:
    """prometheus_client's per-process histogram files in the workers' shared directory."""
    workers = psutil.Process(process.proc.pid).children(recursive=True)
    directories = {w.environ().get("PROMETHEUS_MULTIPROC_DIR") for w in workers} - {None}
    assert len(directories) == 1, directories
    (directory,) = directories
    return {path.name for path in Path(str(directory)).glob("histogram_*.db")}


PROBE = """
import asyncio, json, sys
import httpx
from opentelemetry.sdk.trace import Span
from gateway import settings as settings_module
from gateway.app import build_app

created = []
original = Span.__init__
def counting(self, *args, **kwargs):
    created.append(self)
    original(self, *args, **kwargs)
Span.__init__ = counting  # counts every span the SDK makes

stack = build_app(settings_module.load(sys.argv[1]))
layers, app = [], stack
while hasattr(app, "app"):
    layers.append(type(app).__name__)
    app = app.app
gateway = app.state.gateway

async def serve():
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    transport = httpx.ASGITransport(app=stack)
    async with gateway.running(), httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        headers = {"authorization": "Bearer " + sys.argv[2]}
        replies = [await client.post("/v1/chat/completions", json=body, headers=headers) for _ in range(3)]
        return [reply.status_code for reply in replies]

statuses = asyncio.run(serve())
print(json.dumps({
    "statuses": statuses,
    "pipeline": type(gateway.pipeline).__name__,
    "stages": [type(s).__module__ for s in (*gateway.pipeline.stages, *gateway.pipeline.final_stages)],
    "layers": layers,
    "telemetry_imported": sorted(m for m in sys.modules if m.startswith("gateway.telemetry")),
    "spans": len(created),
}))
"""
TELEMETRY = {
    "off": "",
    "on": "telemetry: {{tracing: true, metrics: true, otlp_endpoint: '{otlp}'}}\n",
    "sampled out": "telemetry: {{tracing: true, sample_ratio: 0, otlp_endpoint: '{otlp}'}}\n",
}


@pytest.mark.parametrize("telemetry", list(TELEMETRY))
def test_telemetry_off_builds_nothing_and_a_request_sampled_out_makes_no_span(
    mock: Mock, tmp_path: Path, telemetry: str
) -> None:
    with OtlpReceiver() as receiver:
        config = tmp_path / "gateway.yaml"
        config.write_text(
            MODELS.format(mock=mock.url) + "audit: false\n" + TELEMETRY[telemetry].format(otlp=receiver.url)
        )
        key = create_key(config, "--team", "quiet")
        done = subprocess.run(
            [sys.executable, "-c", PROBE, str(config), key],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "TEST_UPSTREAM_KEY": UPSTREAM_SECRET},
            check=False,
        )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["statuses"] == [200, 200, 200]
    if telemetry == "off":
        assert seen["pipeline"] == "Pipeline"
        assert not any(module.startswith("gateway.telemetry") for module in seen["stages"])
        assert seen["layers"] == ["RequestIdMiddleware", "RequestLimitsMiddleware", "HotPath"]
        assert seen["telemetry_imported"] == []
        assert seen["spans"] == 0
    else:  # the same probe sees the telemetry when it is on: it can tell the difference
        assert seen["pipeline"] == "ObservedPipeline"
        assert all(module.startswith("gateway.telemetry") for module in seen["stages"])
        assert seen["layers"] == ["RequestIdMiddleware", "ServerSpans", "RequestLimitsMiddleware", "HotPath"]
        # sampled: a server span, a span per stage and one for the upstream call, per request; sampled out: none
        assert seen["spans"] == (3 * (1 + len(seen["stages"]) - 2 + 1) if telemetry == "on" else 0)


def test_metrics_are_never_public_by_default(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(MODELS.format(mock="http://127.0.0.1:9") + "telemetry: {prometheus: true}\n")
    with pytest.raises(yamlconf.ConfigError) as refused:
        settings_module.load(config)
    assert "prometheus_token" in str(refused.value) and "prometheus_public" in str(refused.value)
    config.write_text(
        MODELS.format(mock="http://127.0.0.1:9") + "telemetry: {prometheus: true, prometheus_public: true}\n"
    )
    assert settings_module.load(config).telemetry.prometheus_public
