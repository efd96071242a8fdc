"""An OpenAI SDK app talks to a Claude model through the gateway: answers, streams, tools, usage and errors.

The upstream is the mock Anthropic server (load_tests/mock_anthropic.py), which answers like Anthropic's
Messages API and records what it was sent, so the tests see both sides of the translation.
"""

import json
from collections.abc import Iterator
from dataclasses import dataclass

import openai
import pytest

from tests.conftest import create_key
from tests.samples import TOOLS
from tests.servers import Mock, start

ANTHROPIC_KEY = "sk-ant-test-0123456789"
CONFIG = """\
audit: false  # this module does not test the audit trail (on by default)
models:
  - name: claude
    provider: anthropic
    base_url: "{mock}/v1"
    api_key: env:ANTHROPIC_TEST_KEY
    model: claude-sonnet-4-5
  - name: claude-overloaded
    provider: anthropic
    base_url: "{mock}/v1"
    api_key: env:ANTHROPIC_TEST_KEY
    model: fail529-claude
    retries: {{attempts: 2, backoff: 0.01, max_backoff: 0.02}}
"""
MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "hello claude"}]


@dataclass
class Claude:
    mock: Mock
    base_url: str
    key: str


@pytest.fixture(scope="module")
def claude(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Claude]:
    folder = tmp_path_factory.mktemp("anthropic")
    upstream = start(["-m", "load_tests.mock_anthropic", "--api-key", ANTHROPIC_KEY], "/health", folder / "mock.log")
    mock = Mock(upstream)
    config = folder / "gateway.yaml"
    config.write_text(CONFIG.format(mock=upstream.url))
    key = create_key(config, "--team", "research")
    env = {"ANTHROPIC_TEST_KEY": ANTHROPIC_KEY}
    try:
        gateway = start(["-m", "gateway", "serve", "--config", str(config)], "/healthz", folder / "gateway.log", env)
        try:
            yield Claude(mock, gateway.url + "/v1", key)
        finally:
            gateway.stop()
    finally:
        mock.client.close()
        upstream.stop()


@pytest.fixture
def client(claude: Claude) -> Iterator[openai.OpenAI]:
    claude.mock.reset()
    with openai.OpenAI(base_url=claude.base_url, api_key=claude.key, max_retries=0, timeout=20) as sdk:
        yield sdk


def sent(claude: Claude) -> dict:
    """The last request the mock Anthropic server received."""
    requests = [r for r in claude.mock.requests() if r["path"] == "/v1/messages"]
    return requests[-1]  # type: ignore[no-any-return]


def test_a_chat_completion_is_answered_by_claude(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(model="claude", messages=MESSAGES)
    assert answer.choices[0].message.content == "Echo: hello claude"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.object == "chat.completion"
    assert answer.model == "claude-sonnet-4-5"


def test_the_system_prompt_reaches_anthropics_system_field(client: openai.OpenAI, claude: Claude) -> None:
    client.chat.completions.create(model="claude", messages=MESSAGES, max_tokens=64, stop="END")
    body = sent(claude)["body"]
    assert body["system"] == "You are terse."
    assert body["messages"] == [{"role": "user", "content": "hello claude"}]
    assert body["model"] == "claude-sonnet-4-5"
    assert body["max_tokens"] == 64
    assert body["stop_sequences"] == ["END"]


def test_anthropic_gets_its_own_key_and_never_the_clients(client: openai.OpenAI, claude: Claude) -> None:
    client.chat.completions.create(model="claude", messages=MESSAGES)
    headers = sent(claude)["headers"]
    assert headers["x-api-key"] == ANTHROPIC_KEY
    assert headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in headers
    assert claude.key not in json.dumps(headers)


def test_usage_is_reported_in_openai_terms(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(model="claude", messages=MESSAGES)
    assert answer.usage is not None
    assert answer.usage.prompt_tokens == 5  # "You are terse." + "hello claude", one token a word
    assert answer.usage.completion_tokens == 3
    assert answer.usage.total_tokens == 8


def test_a_streamed_answer_concatenates_to_the_text(client: openai.OpenAI, claude: Claude) -> None:
    chunks = list(client.chat.completions.create(model="claude", messages=MESSAGES, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "Echo: hello claude"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    with_usage = client.chat.completions.create(
        model="claude", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    last = list(with_usage)[-1]
    assert last.choices == [] and last.usage is not None and last.usage.total_tokens == 8
    assert sent(claude)["body"]["stream"] is True


def test_a_tool_call_comes_back_as_an_openai_tool_call(client: openai.OpenAI, claude: Claude) -> None:
    answer = client.chat.completions.create(model="claude", messages=MESSAGES, tools=TOOLS, tool_choice="required")
    assert answer.choices[0].finish_reason == "tool_calls"
    [call] = answer.choices[0].message.tool_calls or []
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"echo": "hello claude"}
    body = sent(claude)["body"]
    assert body["tools"][0]["input_schema"] == TOOLS[0]["function"]["parameters"]
    assert body["tool_choice"] == {"type": "any"}


def test_a_streamed_tool_call_reassembles_in_the_sdk_helper(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(
        model="claude", messages=MESSAGES, tools=TOOLS, stream_options={"include_usage": True}
    ) as stream:
        final = stream.get_final_completion()
    [call] = final.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"echo": "hello claude"}
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.usage is not None and final.usage.prompt_tokens == 5


def test_a_tool_result_goes_back_to_claude_as_a_tool_result_block(client: openai.OpenAI, claude: Claude) -> None:
    first = client.chat.completions.create(model="claude", messages=MESSAGES, tools=TOOLS)
    call = (first.choices[0].message.tool_calls or [])[0]
    follow_up = [
        *MESSAGES,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    answer = client.chat.completions.create(model="claude", messages=follow_up, tools=TOOLS)
    assert answer.choices[0].message.content == "Echo: sunny"
    turns = sent(claude)["body"]["messages"]
    assert turns[1]["content"] == [
        {"type": "tool_use", "id": call.id, "name": "get_weather", "input": {"echo": "hello claude"}}
    ]
    assert turns[2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}],
    }


def test_an_overloaded_anthropic_is_an_internal_server_error_in_openai_shape(
    client: openai.OpenAI, claude: Claude
) -> None:
    with pytest.raises(openai.InternalServerError) as failed:
        client.chat.completions.create(model="claude-overloaded", messages=MESSAGES)
    assert failed.value.status_code == 529
    assert failed.value.body == {
        "message": "Overloaded",
        "type": "server_error",
        "param": None,
        "code": "overloaded_error",
    }
    assert len([r for r in claude.mock.requests() if r["path"] == "/v1/messages"]) == 2  # 529 is retried


def test_embeddings_on_a_claude_model_are_a_bad_request(client: openai.OpenAI, claude: Claude) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model="claude", input="hello")
    assert refused.value.status_code == 400
    assert "does not serve /v1/embeddings" in refused.value.message
    assert claude.mock.requests() == []


def test_n_above_one_is_refused_before_anthropic_is_called(client: openai.OpenAI, claude: Claude) -> None:
    with pytest.raises(openai.BadRequestError, match="'n' must be 1"):
        client.chat.completions.create(model="claude", messages=MESSAGES, n=2)
    assert claude.mock.requests() == []
