"""Policies enforced by a running gateway, seen through the official openai SDK: block, redact, warn, shadow,
streamed-output blocking, /readyz, and hot reload (file change, SIGHUP, broken files, and changes under load)."""

import shutil
import signal
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from gateway.policy import loader
from tests.conftest import create_key
from tests.servers import MOCK_MODELS, UPSTREAM_SECRET, Mock, Process, start

GATEWAY_YAML = (
    "audit: false  # this module does not test the audit trail (on by default)\n"
    + MOCK_MODELS
    + """\
policies:
  dir: policies
  reload_interval: 0.2
"""
)

MAIN = """\
policies:
  - name: main
    rules:
      - {name: no-zebras, kind: terms, terms: [zebra], message: "Zebras are not allowed here."}
      - {name: lions-warned, kind: terms, terms: [lion], action: warn}
      - {name: tigers-shadowed, kind: terms, terms: [tiger], action: shadow}
      - name: tickets
        kind: regex
        patterns: ['\\bFIN-\\d{6}\\b']
        action: redact
        replacement: "[TICKET]"
        where: [input]
      - {name: aurora-out, kind: terms, terms: ["Project Aurora"], where: [output], message: "Answer withheld."}
      - name: borealis-out
        kind: terms
        terms: ["Borealis"]
        where: [output]
        action: redact
        replacement: "[CODE NAME]"
      - {name: no-credentials, kind: secrets}
  - name: finance
    match: {teams: [finance]}
    rules:
      - {name: mock-only, kind: models, allow: [mock-model]}
      - {name: purpose, kind: metadata, headers: [x-purpose]}
"""


@dataclass
class PolicyGateway:
    process: Process
    folder: Path
    key: str
    finance_key: str

    @property
    def base_url(self) -> str:
        return self.process.url + "/v1"

    def write(self, extra: str = "", name: str = "main.yaml") -> None:
        write_atomically(self.folder / "policies" / name, MAIN + extra)

    def settle(self) -> None:
        """Wait until the gateway serves what the directory holds now."""
        expected = loader.load(self.folder / "policies").revision
        deadline = time.monotonic() + 5
        while self.readyz()["policies"]["revision"] != expected:
            assert time.monotonic() < deadline, "the gateway did not load the policies"
            time.sleep(0.05)

    def readyz(self) -> dict:
        return httpx.get(self.process.url + "/readyz", timeout=5).json()  # type: ignore[no-any-return]

    def wait_for_revision_change(self, old: str, timeout: float = 5) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.readyz()["policies"]
            if status["revision"] != old or status["last_error"]:
                return status  # type: ignore[no-any-return]
            time.sleep(0.05)
        raise AssertionError("the gateway did not reload its policies")


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(textwrap.dedent(text), encoding="utf-8")
    tmp.replace(path)


@pytest.fixture(scope="module")
def policy_gateway(mock: Mock, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PolicyGateway]:
    folder = tmp_path_factory.mktemp("policy-gateway")
    (folder / "policies").mkdir()
    config = folder / "gateway.yaml"
    config.write_text(GATEWAY_YAML.format(mock=mock.url))
    write_atomically(folder / "policies" / "main.yaml", MAIN)
    key = create_key(config, "--team", "platform")
    finance = create_key(config, "--team", "finance")
    env = {"TEST_UPSTREAM_KEY": UPSTREAM_SECRET}
    process = start(["-m", "gateway", "serve", "--config", str(config)], "/healthz", folder / "gateway.log", env)
    try:
        yield PolicyGateway(process, folder, key, finance)
    finally:
        process.stop()


@pytest.fixture
def sdk(policy_gateway: PolicyGateway, upstream: Mock) -> Iterator[openai.OpenAI]:
    policy_gateway.write()
    policy_gateway.settle()
    with openai.OpenAI(base_url=policy_gateway.base_url, api_key=policy_gateway.key, max_retries=0, timeout=20) as c:
        yield c


def ask(sdk: openai.OpenAI, text: str, model: str = "mock-model", **extra: object) -> object:
    return sdk.chat.completions.create(model=model, messages=[{"role": "user", "content": text}], **extra)


def test_a_blocked_prompt_never_reaches_the_model(sdk: openai.OpenAI, upstream: Mock) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        ask(sdk, "tell me about the Zebra")
    error = caught.value.body
    assert isinstance(error, dict)
    assert (error["code"], error["message"], error["policy"], error["rule"]) == (
        "policy_violation",
        "Zebras are not allowed here.",
        "main",
        "no-zebras",
    )
    assert upstream.requests() == []


def test_a_credential_in_a_tool_result_is_blocked(sdk: openai.OpenAI, upstream: Mock) -> None:
    messages = [
        {"role": "user", "content": "read the config"},
        {
            "role": "assistant",
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "read", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "aws_key = AKIAIOSFODNN7EXAMPLE"},
    ]
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="mock-model", messages=messages)  # type: ignore[arg-type]
    assert isinstance(caught.value.body, dict) and caught.value.body["rule"] == "no-credentials"
    assert upstream.requests() == []


def test_a_warned_prompt_passes_and_says_why(sdk: openai.OpenAI) -> None:
    raw = sdk.chat.completions.with_raw_response.create(
        model="mock-model", messages=[{"role": "user", "content": "a lion"}]
    )
    assert raw.headers["x-gateway-policy-warnings"] == "main/lions-warned"
    assert raw.parse().choices[0].message.content == "Echo: a lion"


def test_a_shadow_rule_changes_nothing(sdk: openai.OpenAI) -> None:
    raw = sdk.chat.completions.with_raw_response.create(
        model="mock-model", messages=[{"role": "user", "content": "a tiger"}]
    )
    assert "x-gateway-policy-warnings" not in raw.headers
    assert raw.parse().choices[0].message.content == "Echo: a tiger"


def test_redacted_input_is_what_the_model_receives(sdk: openai.OpenAI, upstream: Mock) -> None:
    answer = ask(sdk, "close FIN-123456 today")
    assert answer.choices[0].message.content == "Echo: close [TICKET] today"  # type: ignore[attr-defined]
    assert "FIN-123456" not in str(upstream.requests()[-1]["body"])


def test_a_blocked_answer_is_replaced_by_the_error(sdk: openai.OpenAI, upstream: Mock) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        ask(sdk, "say Project Aurora")  # the echo carries the term; output-only rule
    assert isinstance(caught.value.body, dict) and caught.value.body["rule"] == "aurora-out"
    assert len(upstream.requests()) == 1


def test_a_stream_is_cut_before_a_term_split_across_chunks(sdk: openai.OpenAI) -> None:
    received = []
    stream = sdk.chat.completions.create(
        model="mock-model", messages=[{"role": "user", "content": "news about Project Aurora and more"}], stream=True
    )
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
    text = "".join(received)
    assert "Aurora" not in text
    assert "Answer withheld." in str(caught.value.message)


def test_a_streamed_answer_is_redacted_across_chunks(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model="mock-model", messages=[{"role": "user", "content": "the Borealis plan is final"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Echo: the [CODE NAME] plan is final"


def test_team_policies_apply_to_their_team_only(policy_gateway: PolicyGateway, sdk: openai.OpenAI) -> None:
    with openai.OpenAI(base_url=policy_gateway.base_url, api_key=policy_gateway.finance_key, max_retries=0) as finance:
        with pytest.raises(openai.BadRequestError) as caught:
            ask(finance, "hi", model="gpt-4o-mini", extra_headers={"x-purpose": "research"})
        assert isinstance(caught.value.body, dict) and caught.value.body["rule"] == "mock-only"
        with pytest.raises(openai.BadRequestError) as caught:
            ask(finance, "hi")
        assert isinstance(caught.value.body, dict) and caught.value.body["rule"] == "purpose"
        ask(finance, "hi", extra_headers={"x-purpose": "research"})
    ask(sdk, "hi", model="gpt-4o-mini")


def test_readyz_shows_the_serving_revision(policy_gateway: PolicyGateway, sdk: openai.OpenAI) -> None:
    status = policy_gateway.readyz()
    assert len(status["policies"]["revision"]) == 16 and status["policies"]["policies"] == 2


def test_a_changed_file_is_served_without_a_restart(policy_gateway: PolicyGateway, sdk: openai.OpenAI) -> None:
    old = policy_gateway.readyz()["policies"]["revision"]
    extra = "  - name: late\n    rules:\n      - {name: no-okapis, kind: terms, terms: [okapi]}\n"
    policy_gateway.write(extra)
    policy_gateway.wait_for_revision_change(old)
    with pytest.raises(openai.BadRequestError):
        ask(sdk, "an okapi")


def test_a_broken_file_keeps_the_last_good_revision(policy_gateway: PolicyGateway, sdk: openai.OpenAI) -> None:
    old = policy_gateway.readyz()["policies"]
    broken = policy_gateway.folder / "policies" / "broken.yaml"
    write_atomically(
        broken, "policies:\n  - name: b\n    rules:\n      - {name: r, kind: regex, patterns: ['(a+)+b']}\n"
    )
    try:
        status = policy_gateway.wait_for_revision_change(old["revision"])
        assert status["revision"] == old["revision"]
        assert "broken.yaml:4: policies[0].rules[0].patterns[0]" in status["last_error"]
        assert status["reload_failures"] == old["reload_failures"] + 1
        with pytest.raises(openai.BadRequestError):
            ask(sdk, "zebra")  # the last good policies still apply
        assert ask(sdk, "hello").choices[0].message.content == "Echo: hello"  # type: ignore[attr-defined]
    finally:
        broken.unlink()
    assert "broken.yaml" in policy_gateway.process.output()


def test_sighup_reloads_at_once(policy_gateway: PolicyGateway, tmp_path: Path) -> None:
    folder = copy_gateway(policy_gateway, tmp_path, "reload_interval: 3600")  # no polling to speak of
    process = start_copy(folder)
    try:
        before = httpx.get(process.url + "/readyz").json()["policies"]["revision"]
        write_atomically(folder / "policies" / "extra.yaml", "policies:\n  - {name: extra, rules: []}\n")
        time.sleep(0.5)
        assert httpx.get(process.url + "/readyz").json()["policies"]["revision"] == before
        process.proc.send_signal(signal.SIGHUP)
        expected = loader.load(folder / "policies").revision
        deadline = time.monotonic() + 5
        while httpx.get(process.url + "/readyz").json()["policies"]["revision"] != expected:
            assert time.monotonic() < deadline, "SIGHUP did not reload the policies"
            time.sleep(0.05)
        assert process.proc.poll() is None
    finally:
        process.stop()


def copy_gateway(policy_gateway: PolicyGateway, tmp_path: Path, reload: str) -> Path:
    folder = tmp_path / "copy"
    shutil.copytree(policy_gateway.folder, folder, ignore=shutil.ignore_patterns("*.log"))
    config = folder / "gateway.yaml"
    config.write_text(config.read_text().replace("reload_interval: 0.2", reload))
    return folder


def start_copy(folder: Path, *args: str) -> Process:
    command = ["-m", "gateway", "serve", "--config", str(folder / "gateway.yaml"), *args]
    return start(command, "/healthz", folder / "gateway.log", {"TEST_UPSTREAM_KEY": UPSTREAM_SECRET})


TWO_FILES = {
    "a": (
        "policies:\n  - name: file-a\n    rules:\n      - {{name: a-{v}, kind: terms, terms: [alpha], action: warn}}\n"
    ),
    "b": (
        "policies:\n  - name: file-b\n    rules:\n      - {{name: b-{v}, kind: terms, terms: [beta], action: warn}}\n"
    ),
}


def test_no_request_sees_half_a_change_under_load(policy_gateway: PolicyGateway, sdk: openai.OpenAI) -> None:
    folder = policy_gateway.folder / "policies"

    def publish(version: int) -> None:  # two files, rewritten in place one after the other, like a git checkout
        for name, text in TWO_FILES.items():
            (folder / f"{name}.yaml").write_text(text.format(v=version))

    publish(0)
    policy_gateway.settle()
    seen: list[tuple[int, str]] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=policy_gateway.base_url, timeout=10) as http:
            while not stop.is_set():
                response = http.post(
                    "/chat/completions",
                    headers={"authorization": f"Bearer {policy_gateway.key}"},
                    json={"model": "mock-model", "messages": [{"role": "user", "content": "alpha beta"}]},
                )
                seen.append((response.status_code, response.headers.get("x-gateway-policy-warnings", "")))

    workers = [threading.Thread(target=load) for _ in range(6)]
    for worker in workers:
        worker.start()
    try:
        for version in range(1, 9):
            publish(version)
            time.sleep(0.4)
    finally:
        stop.set()
        for worker in workers:
            worker.join()
        for name in TWO_FILES:
            (folder / f"{name}.yaml").unlink()
    assert len(seen) > 100
    assert {status for status, _ in seen} == {200}
    pairs = {warnings for _, warnings in seen}
    consistent = {f"file-a/a-{v}, file-b/b-{v}" for v in range(9)}
    assert pairs <= consistent, pairs - consistent
    assert len(pairs) >= 4  # the load saw several revisions


def test_every_worker_serves_the_same_revision(policy_gateway: PolicyGateway, tmp_path: Path) -> None:
    folder = copy_gateway(policy_gateway, tmp_path, "reload_interval: 1.0")
    process = start_copy(folder, "--workers", "2")
    try:

        def revisions() -> set[str]:
            # a new connection each time, so the kernel spreads them over the workers
            return {httpx.get(process.url + "/readyz").json()["policies"]["revision"] for _ in range(30)}

        assert revisions() == {loader.load(folder / "policies").revision}
        write_atomically(folder / "policies" / "extra.yaml", "policies:\n  - {name: extra, rules: []}\n")
        expected = loader.load(folder / "policies").revision
        deadline = time.monotonic() + 10
        while revisions() != {expected}:
            assert time.monotonic() < deadline, "the workers did not converge on the new revision"
            time.sleep(0.2)
    finally:
        process.stop()


def test_a_responses_stream_is_cut_at_an_output_term(sdk: openai.OpenAI) -> None:
    deltas = []
    with pytest.raises(openai.APIError):
        for event in sdk.responses.create(model="mock-model", input="tell me of Project Aurora", stream=True):
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
    assert "Aurora" not in "".join(deltas)


def test_a_completion_answer_is_redacted(sdk: openai.OpenAI) -> None:
    answer = sdk.completions.create(model="mock-model", prompt="the Borealis file")
    assert "Borealis" not in answer.choices[0].text and "[CODE NAME]" in answer.choices[0].text


def test_embeddings_inputs_are_checked(sdk: openai.OpenAI, upstream: Mock) -> None:
    with pytest.raises(openai.BadRequestError):
        sdk.embeddings.create(model="mock-model", input=["fine", "a zebra"])
    assert upstream.requests() == []
