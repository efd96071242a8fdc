"""PII protection of a running gateway, seen through the official openai SDK against the echoing mock upstream
that records what it received: the upstream never gets a protected value, the client gets the answer with
pseudonyms restored (or masked values left masked), in prompts, system messages, tool arguments and results,
embeddings, streams, and Chinese and mixed-script text; a blocked entity is a 400; bad input stays bounded."""

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway import codec
from gateway.secrets import generate_master_key
from tests.conftest import create_key
from tests.servers import MOCK_MODELS, UPSTREAM_SECRET, Mock, Process, start

GATEWAY_YAML = (
    "audit: false  # this module does not test the audit trail (on by default)\n"
    + MOCK_MODELS
    + """\
  - name: text-embedding-3-small
    provider: openai
    base_url: {mock}/v1
    api_key: env:TEST_UPSTREAM_KEY
policies:
  dir: policies
pii:
  processes: 1
  timeout: 5
  conversation_header: x-conversation-id
"""
)
CONVERSATIONS = "  conversation_header: x-conversation-id\n"

POLICY = """\
policies:
  - name: privacy
    rules:
      - name: personal-data
        kind: pii
        entities:
          EMAIL_ADDRESS: pseudonymise
          PHONE_NUMBER: pseudonymise
          PERSON: pseudonymise
          IBAN_CODE: pseudonymise
          CN_MOBILE: pseudonymise
          LOCATION: mask
          US_SSN: mask
          CN_ID_CARD: mask
          IP_ADDRESS: hash
          CREDIT_CARD: block
          API_KEY: block
"""

EMAIL = "alice.martin@example.com"
PHONE = "+1 415-555-0132"
NAME = "Alice Martin"
IBAN = "DE89370400440532013000"
SSN = "536-22-1234"
IP = "203.0.113.42"
CN_MOBILE = "13800138000"
CN_ID = "11010519491231002X"


@dataclass
class PiiGateway:
    process: Process
    config: Path
    key: str

    @property
    def base_url(self) -> str:
        return self.process.url + "/v1"

    def sdk(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=self.key, max_retries=0, timeout=30)


def start_protected(folder: Path, mock: Mock, yaml: str, env: dict[str, str]) -> tuple[Process, Path, str]:
    """A gateway enforcing POLICY with the given gateway.yaml, once its analyzer pool is ready, and a key."""
    (folder / "policies").mkdir()
    (folder / "policies" / "privacy.yaml").write_text(POLICY)
    config = folder / "gateway.yaml"
    config.write_text(yaml)
    key = create_key(config, "--team", "support")  # made before the start, so the gateway has it at once
    args = ["-m", "gateway", "serve", "--config", str(config)]
    process = start(args, "/healthz", folder / "gateway.log", {"TEST_UPSTREAM_KEY": UPSTREAM_SECRET, **env})
    deadline = time.monotonic() + 90
    while not httpx.get(process.url + "/readyz").json()["pii"]["ready"]:  # the pool loads spaCy once
        if time.monotonic() > deadline:
            process.stop()
            raise AssertionError(process.output())
        time.sleep(0.2)
    return process, config, key


@pytest.fixture(scope="module")
def protected(mock: Mock, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PiiGateway]:
    env = {"GATEWAY_MASTER_KEY": generate_master_key()}
    folder = tmp_path_factory.mktemp("pii")
    process, config, key = start_protected(folder, mock, GATEWAY_YAML.format(mock=mock.url), env)
    try:
        yield PiiGateway(process, config, key)
    finally:
        process.stop()


def sent_upstream(upstream: Mock) -> str:
    """Everything the upstream received, as one string."""
    return "\n".join(codec.dumps(r["body"]).decode() for r in upstream.requests())


def chat(sdk: openai.OpenAI, messages: list[dict[str, Any]], **extra: Any) -> Any:
    return sdk.chat.completions.create(model="mock-model", messages=messages, **extra)  # type: ignore[arg-type]


def test_pseudonyms_go_upstream_and_the_client_gets_the_real_values_back(protected: PiiGateway, upstream: Mock) -> None:
    text = f"Hi, I am {NAME}. Mail {EMAIL} or call {PHONE}; pay to {IBAN}."
    with protected.sdk() as sdk:
        answer = chat(sdk, [{"role": "system", "content": f"The user {NAME} writes from {EMAIL}."},
                            {"role": "user", "content": text}])  # fmt: skip
    received = sent_upstream(upstream)
    for value in (EMAIL, PHONE, NAME, IBAN, "Martin"):
        assert value not in received
    assert "<EMAIL_ADDRESS_1>" in received and "<PERSON_1>" in received and "<IBAN_CODE_1>" in received
    # the same value got the same placeholder in both messages
    assert received.count("<EMAIL_ADDRESS_1>") == 2 and "<EMAIL_ADDRESS_2>" not in received
    assert answer.choices[0].message.content == "Echo: " + text


def test_masked_and_hashed_values_stay_hidden_from_both_sides(protected: PiiGateway, upstream: Mock) -> None:
    text = f"My SSN is {SSN} and my server is {IP}; I live in Paris."
    with protected.sdk() as sdk:
        content = chat(sdk, [{"role": "user", "content": text}]).choices[0].message.content
    received = sent_upstream(upstream)
    for value in (SSN, IP, "Paris"):
        assert value not in received and value not in content
    assert "<US_SSN>" in content and "<LOCATION>" in content and "<IP_ADDRESS:" in content


def test_a_blocked_entity_refuses_the_request_before_the_upstream(protected: PiiGateway, upstream: Mock) -> None:
    with protected.sdk() as sdk, pytest.raises(openai.BadRequestError) as caught:
        chat(sdk, [{"role": "user", "content": "Charge my card 4111 1111 1111 1111 please"}])
    error = caught.value.body
    assert isinstance(error, dict) and error["code"] == "policy_violation" and error["rule"] == "personal-data"
    assert "CREDIT_CARD" in error["message"] and "4111" not in error["message"]
    assert upstream.requests() == []


def test_tool_arguments_and_tool_results_are_protected(protected: PiiGateway, upstream: Mock) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": f'{{"email": "{EMAIL}"}}'}}
    messages = [
        {"role": "user", "content": "Find my account"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": f"Account owner phone: {PHONE}"},
        {"role": "user", "content": "Thanks"},
    ]
    with protected.sdk() as sdk:
        chat(sdk, messages)
    received = sent_upstream(upstream)
    assert EMAIL not in received and PHONE not in received
    assert "<EMAIL_ADDRESS_1>" in received and "<PHONE_NUMBER_1>" in received


def test_embedding_inputs_are_protected(protected: PiiGateway, upstream: Mock) -> None:
    with protected.sdk() as sdk:
        sdk.embeddings.create(model="text-embedding-3-small", input=[f"contact {EMAIL}", "nothing here"])
    received = sent_upstream(upstream)
    assert EMAIL not in received and "<EMAIL_ADDRESS_1>" in received


def test_a_streamed_answer_is_restored(protected: PiiGateway, upstream: Mock) -> None:
    text = f"Please write to {EMAIL} and {NAME} today"
    with protected.sdk() as sdk:
        stream = chat(sdk, [{"role": "user", "content": text}], stream=True)
        content = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert content == "Echo: " + text
    assert EMAIL not in sent_upstream(upstream)


def test_chinese_and_mixed_script_text(protected: PiiGateway, upstream: Mock) -> None:
    text = f"请联系我，电话{CN_MOBILE}，身份证{CN_ID}，邮箱 {EMAIL}。Thanks!"  # noqa: RUF001
    with protected.sdk() as sdk:
        content = chat(sdk, [{"role": "user", "content": text}]).choices[0].message.content
    received = sent_upstream(upstream)
    for value in (CN_MOBILE, CN_ID, EMAIL):
        assert value not in received
    assert CN_MOBILE in content and EMAIL in content  # pseudonymised: restored for the client
    assert CN_ID not in content and "<CN_ID_CARD>" in content  # masked: stays masked


def test_text_without_pii_is_sent_unchanged(protected: PiiGateway, upstream: Mock) -> None:
    text = "The quarterly report shows growth in every region; the next release is planned."
    with protected.sdk() as sdk:
        assert chat(sdk, [{"role": "user", "content": text}]).choices[0].message.content == "Echo: " + text
    assert upstream.requests()[0]["body"]["messages"][0]["content"] == text


def test_pathological_input_stays_bounded(protected: PiiGateway, upstream: Mock) -> None:
    started = time.monotonic()
    body = {"model": "mock-model", "messages": [{"role": "user", "content": "1" * 200_000 + "@." * 50_000}]}
    response = httpx.post(
        protected.base_url + "/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {protected.key}"},
        timeout=60,
    )
    assert time.monotonic() - started < 30
    assert response.status_code in (200, 503), response.text
    if response.status_code == 503:
        assert response.json()["error"]["code"] == "pii_unavailable"
    assert httpx.get(protected.process.url + "/healthz").status_code == 200


def test_many_short_messages_are_all_checked(protected: PiiGateway, upstream: Mock) -> None:
    messages = [{"role": "user", "content": f"note {n}"} for n in range(500)]
    messages.append({"role": "user", "content": f"reach me at {EMAIL}"})
    with protected.sdk() as sdk:
        chat(sdk, messages)
    assert EMAIL not in sent_upstream(upstream)


def test_a_lone_surrogate_in_json_is_a_clear_400(protected: PiiGateway, upstream: Mock) -> None:
    raw = b'{"model": "mock-model", "messages": [{"role": "user", "content": "hi \\ud800 there"}]}'
    response = httpx.post(
        protected.base_url + "/chat/completions",
        content=raw,
        headers={"authorization": f"Bearer {protected.key}", "content-type": "application/json"},
    )
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"


def test_pseudonyms_stay_the_same_across_a_conversation(protected: PiiGateway, upstream: Mock) -> None:
    other = "bob.stone@example.org"
    with protected.sdk() as sdk:
        first = {"x-conversation-id": "conv-42"}
        chat(sdk, [{"role": "user", "content": f"I am {EMAIL}"}], extra_headers=first)
        answer = (
            chat(sdk, [{"role": "user", "content": f"Forward {other} to {EMAIL}"}], extra_headers=first)
            .choices[0]
            .message.content
        )
        chat(sdk, [{"role": "user", "content": f"Forward {other} to {EMAIL}"}])  # another conversation: fresh numbers
    bodies = [r["body"]["messages"][-1]["content"] for r in upstream.requests()]
    assert bodies == [
        "I am <EMAIL_ADDRESS_1>",
        "Forward <EMAIL_ADDRESS_2> to <EMAIL_ADDRESS_1>",  # the first address kept its pseudonym
        "Forward <EMAIL_ADDRESS_1> to <EMAIL_ADDRESS_2>",
    ]
    assert answer == f"Echo: Forward {other} to {EMAIL}"


def test_the_analyzer_processes_do_not_outlive_a_killed_gateway(mock: Mock, tmp_path: Path) -> None:
    import psutil

    yaml = GATEWAY_YAML.format(mock=mock.url).replace(CONVERSATIONS, "")
    process, _, _ = start_protected(tmp_path, mock, yaml, {})
    try:
        pool = psutil.Process(process.proc.pid).children(recursive=True)
        assert pool, "the analyzer pool has processes"
        process.proc.kill()  # kill -9: no shutdown code runs in the gateway
        process.proc.wait(timeout=10)
        _, alive = psutil.wait_procs(pool, timeout=10)
        assert alive == [], [p.pid for p in alive]
    finally:
        process.stop()


def test_without_the_ner_pipeline_the_start_up_warns_and_patterns_still_protect(
    mock: Mock, upstream: Mock, tmp_path: Path
) -> None:
    yaml = GATEWAY_YAML.format(mock=mock.url).replace(CONVERSATIONS, "") + "  spacy_model: no_such_pipeline\n"
    process, _, key = start_protected(tmp_path, mock, yaml, {})
    try:
        assert "PERSON, LOCATION and NRP cannot be detected" in process.output()
        with openai.OpenAI(base_url=process.url + "/v1", api_key=key, max_retries=0) as sdk:
            chat(sdk, [{"role": "user", "content": f"I am {NAME}, write to {EMAIL}"}])
        received = sent_upstream(upstream)
        assert EMAIL not in received and "<EMAIL_ADDRESS_1>" in received
        assert NAME in received  # what is lost without the pipeline, as the warning said
    finally:
        process.stop()
