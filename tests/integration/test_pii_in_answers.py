"""Personal data the model produces itself, seen through the official openai SDK: with `output: mask` a value
the model made up never reaches the client (JSON answers, chat streams, Responses streams), while the value
the client sent, pseudonymised upstream, still comes back restored. Two mock upstreams: one always answers
with made-up personal data (`chatty`, tests.conftest), the other echoes the prompt."""

import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.conftest import MADE_UP_EMAIL, MADE_UP_IP, MADE_UP_PHONE, create_key
from tests.servers import UPSTREAM_SECRET, Mock, Process, start

SENT_EMAIL = "alice.martin@example.com"

GATEWAY_YAML = """\
audit: false  # this module does not test the audit trail (on by default)
models:
  - name: echo-model
    provider: openai_compatible
    base_url: {echo}/v1
    api_key: env:TEST_UPSTREAM_KEY
  - name: chatty-model
    provider: openai_compatible
    base_url: {chatty}/v1
    api_key: env:TEST_UPSTREAM_KEY
policies:
  dir: policies
pii:
  processes: 1
  timeout: 10
  output_window: 64
"""
POLICY = """\
policies:
  - name: privacy
    rules:
      - name: personal-data
        kind: pii
        output: mask
        entities:
          EMAIL_ADDRESS: pseudonymise
          PHONE_NUMBER: mask
          PERSON: pseudonymise
          IP_ADDRESS: hash
"""


@pytest.fixture(scope="module")
def gateway(mock: Mock, chatty: Mock, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Process, str]]:
    folder = tmp_path_factory.mktemp("answers")
    (folder / "policies").mkdir()
    (folder / "policies" / "privacy.yaml").write_text(POLICY)
    config = folder / "gateway.yaml"
    config.write_text(GATEWAY_YAML.format(echo=mock.url, chatty=chatty.url))
    key = create_key(config, "--team", "support")
    args = ["-m", "gateway", "serve", "--config", str(config)]
    process = start(args, "/healthz", folder / "gateway.log", {"TEST_UPSTREAM_KEY": UPSTREAM_SECRET})
    try:
        deadline = time.monotonic() + 90
        while not httpx.get(process.url + "/readyz").json()["pii"]["ready"]:
            assert time.monotonic() < deadline, process.output()
            time.sleep(0.2)
        yield process, key
    finally:
        process.stop()


def sdk(gateway: tuple[Process, str]) -> openai.OpenAI:
    process, key = gateway
    return openai.OpenAI(base_url=process.url + "/v1", api_key=key, max_retries=0, timeout=30)


def assert_masked(text: str) -> None:
    for value in (MADE_UP_EMAIL, MADE_UP_PHONE, MADE_UP_IP, "bob.smith", "555-0199", "Smith"):
        assert value not in text, text
    assert "<EMAIL_ADDRESS>" in text and "<PHONE_NUMBER>" in text and "<PERSON>" in text, text
    assert "<IP_ADDRESS:" in text and text.endswith("Anything else I can help with?"), text


def test_made_up_values_are_masked_in_a_json_answer(gateway: tuple[Process, str]) -> None:
    with sdk(gateway) as client:
        answer = client.chat.completions.create(model="chatty-model", messages=[{"role": "user", "content": "Who?"}])
    assert_masked(answer.choices[0].message.content or "")


def test_made_up_values_are_masked_in_a_chat_stream_and_no_chunk_carries_a_piece(gateway: tuple[Process, str]) -> None:
    with sdk(gateway) as client:
        stream = client.chat.completions.create(
            model="chatty-model", messages=[{"role": "user", "content": "Who?"}], stream=True
        )
        pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    assert_masked("".join(pieces))
    assert not any("example.org" in piece or "0199" in piece for piece in pieces)


def test_made_up_values_are_masked_in_a_responses_stream(gateway: tuple[Process, str]) -> None:
    with sdk(gateway) as client:
        events = list(client.responses.create(model="chatty-model", input="Who?", stream=True))
    deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert_masked(deltas)
    done = [event for event in events if event.type == "response.output_text.done"]
    assert done and all(event.text == deltas for event in done)  # the restated text is masked the same way
    completed = [event for event in events if event.type == "response.completed"]
    assert completed and completed[0].response.output_text == deltas


def test_the_value_the_client_sent_comes_back_restored_not_masked(gateway: tuple[Process, str], upstream: Mock) -> None:
    text = f"Please write to {SENT_EMAIL} about the invoice"
    with sdk(gateway) as client:
        answer = client.chat.completions.create(model="echo-model", messages=[{"role": "user", "content": text}])
        stream = client.chat.completions.create(
            model="echo-model", messages=[{"role": "user", "content": text}], stream=True
        )
        streamed = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert answer.choices[0].message.content == "Echo: " + text
    assert streamed == "Echo: " + text
    assert all(SENT_EMAIL not in str(request["body"]) for request in upstream.requests())
