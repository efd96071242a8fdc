"""The mock upstream honours the answer length cap as the real API does: cut to `cap` words, finish "length"."""

from collections.abc import Iterator

import openai
import pytest

from load_tests.mock_upstream import MockConfig, running

REPLY = "one two  three four five six seven eight nine ten"  # 10 words; the double space must survive a cut
MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def sdk() -> Iterator[openai.OpenAI]:
    with running(MockConfig(reply=REPLY)) as mock:
        with openai.OpenAI(base_url=mock.url + "/v1", api_key="sk-any", max_retries=0, timeout=10) as client:
            yield client


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_chat_is_cut_to_the_cap_and_ends_with_length(sdk: openai.OpenAI, field: str) -> None:
    reply = sdk.chat.completions.create(model="mock-model", messages=MESSAGES, **{field: 3})  # type: ignore[call-overload]
    [choice] = reply.choices
    assert choice.message.content == "one two  three"
    assert choice.finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 3


def test_a_chat_stream_is_cut_to_the_cap_and_its_usage_counts_the_cut(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model="mock-model", messages=MESSAGES, max_tokens=3, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    [usage] = [c.usage for c in chunks if c.usage is not None]
    assert text == "one two  three"
    assert finishes == ["length"]
    assert usage.completion_tokens == 3


def test_a_chat_answer_within_the_cap_or_without_one_is_whole(sdk: openai.OpenAI) -> None:
    for extra in ({}, {"max_tokens": 10}, {"max_completion_tokens": 50}):
        reply = sdk.chat.completions.create(model="mock-model", messages=MESSAGES, **extra)  # type: ignore[call-overload]
        assert reply.choices[0].message.content == REPLY
        assert reply.choices[0].finish_reason == "stop"
        assert reply.usage is not None and reply.usage.completion_tokens == 10


def test_a_chat_stream_without_a_cap_is_whole(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model="mock-model", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert [c.usage.completion_tokens for c in chunks if c.usage is not None] == [10]


def test_tool_call_arguments_are_never_cut(sdk: openai.OpenAI) -> None:
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    reply = sdk.chat.completions.create(model="mock-model", messages=MESSAGES, tools=[tool], max_tokens=1)  # type: ignore[list-item]
    assert reply.choices[0].finish_reason == "tool_calls"
    [call] = reply.choices[0].message.tool_calls or []
    assert call.function.arguments == '{"echo":"hello"}'  # type: ignore[union-attr]


def test_completions_are_cut_to_max_tokens(sdk: openai.OpenAI) -> None:
    reply = sdk.completions.create(model="mock-model", prompt="hello", max_tokens=3)
    assert reply.choices[0].text == "one two  three"
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 3
    whole = sdk.completions.create(model="mock-model", prompt="hello")
    assert (whole.choices[0].text, whole.choices[0].finish_reason) == (REPLY, "stop")


def test_a_completions_stream_is_cut_to_max_tokens(sdk: openai.OpenAI) -> None:
    stream = sdk.completions.create(
        model="mock-model", prompt="hello", max_tokens=3, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "one two  three"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert [c.usage.completion_tokens for c in chunks if c.usage is not None] == [3]


def test_a_response_is_cut_to_max_output_tokens_and_incomplete(sdk: openai.OpenAI) -> None:
    reply = sdk.responses.create(model="mock-model", input="hello", max_output_tokens=3)
    assert reply.output_text == "one two  three"
    assert reply.status == "incomplete"
    assert reply.incomplete_details is not None and reply.incomplete_details.reason == "max_output_tokens"
    assert reply.usage is not None and reply.usage.output_tokens == 3
    whole = sdk.responses.create(model="mock-model", input="hello")
    assert (whole.output_text, whole.status, whole.incomplete_details) == (REPLY, "completed", None)


def test_a_response_stream_is_cut_and_ends_incomplete(sdk: openai.OpenAI) -> None:
    events = list(sdk.responses.create(model="mock-model", input="hello", max_output_tokens=3, stream=True))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    last = events[-1]
    assert deltas == "one two  three"
    assert last.type == "response.incomplete"
    assert last.response.usage is not None and last.response.usage.output_tokens == 3
