"""An app that changes only base_url and api_key keeps working: the official openai SDK, sync and async."""

import asyncio
import json

import openai
import pytest

from tests.conftest import GatewayUnderTest
from tests.samples import TOOLS
from tests.servers import Mock

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello gateway"}]


def test_chat_completion_returns_the_upstream_answer(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(model="mock-model", messages=MESSAGES)
    assert answer.choices[0].message.content == "Echo: hello gateway"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and answer.usage.total_tokens > 0


def test_streamed_chunks_concatenate_to_the_upstream_text(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="mock-model", messages=MESSAGES, stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: hello gateway"
    assert len(chunks) > 2
    assert all(c.usage is None for c in chunks)


def test_stream_options_include_usage_is_honoured(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="mock-model", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_tool_calls_come_back_as_tool_calls(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(model="mock-model", messages=MESSAGES, tools=TOOLS)
    call = answer.choices[0].message.tool_calls[0]
    assert answer.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"echo": "hello gateway"}


def test_streamed_tool_call_arguments_reassemble(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(model="mock-model", messages=MESSAGES, tools=TOOLS) as stream:
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"echo": "hello gateway"}


def test_json_mode_answer_is_json(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model="mock-model", messages=MESSAGES, response_format={"type": "json_object"}
    )
    assert json.loads(answer.choices[0].message.content or "") == {"echo": "hello gateway"}


def test_fields_the_gateway_does_not_govern_reach_the_upstream_unchanged(client: openai.OpenAI, upstream: Mock) -> None:
    client.chat.completions.create(
        model="mock-model", messages=MESSAGES, temperature=0.25, seed=7, user="u-1", extra_body={"top_k": 3}
    )
    body = upstream.requests()[-1]["body"]
    assert body == {
        "model": "mock-model",
        "messages": MESSAGES,
        "temperature": 0.25,
        "seed": 7,
        "user": "u-1",
        "top_k": 3,
    }


def test_an_aliased_model_is_sent_upstream_under_its_upstream_name(client: openai.OpenAI, upstream: Mock) -> None:
    client.chat.completions.create(model="alias-model", messages=MESSAGES)
    assert upstream.requests()[-1]["body"]["model"] == "mock-model"


def test_legacy_completions(client: openai.OpenAI) -> None:
    answer = client.completions.create(model="mock-model", prompt="say hi")
    assert answer.choices[0].text
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(model="mock-model", prompt="say hi", stream=True)
        if c.choices
    )
    assert streamed == answer.choices[0].text


def test_embeddings_default_base64_and_float(client: openai.OpenAI) -> None:
    default = client.embeddings.create(model="mock-model", input=["one", "two"])
    floats = client.embeddings.create(model="mock-model", input=["one", "two"], encoding_format="float")
    assert len(default.data) == 2
    assert default.data[0].embedding == pytest.approx(floats.data[0].embedding)
    assert default.data[0].embedding != default.data[1].embedding


def test_models_lists_only_what_the_key_may_use(gateway: GatewayUnderTest, client: openai.OpenAI) -> None:
    everything = {m.id for m in client.models.list()}
    assert {"mock-model", "alias-model", "gpt-4o-mini", "slow-model"} <= everything
    with openai.OpenAI(base_url=gateway.base_url, api_key=gateway.limited_key, max_retries=0) as limited:
        assert {m.id for m in limited.models.list()} == {"mock-model", "alias-model"}
        assert limited.models.retrieve("mock-model").id == "mock-model"
        with pytest.raises(openai.NotFoundError):
            limited.models.retrieve("gpt-4o-mini")


def test_responses_api_plain_and_streamed(client: openai.OpenAI) -> None:
    response = client.responses.create(model="mock-model", input="hello responses")
    assert response.output_text == "Echo: hello responses"
    events = list(client.responses.create(model="mock-model", input="hello responses", stream=True))
    assert events[-1].type == "response.completed"
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == "Echo: hello responses"


async def _async_roundtrip(async_client: openai.AsyncOpenAI) -> tuple[str, str, int]:
    answer = await async_client.chat.completions.create(model="mock-model", messages=MESSAGES)
    stream = await async_client.chat.completions.create(model="mock-model", messages=MESSAGES, stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    embedding = await async_client.embeddings.create(model="mock-model", input="x")
    return answer.choices[0].message.content or "", text, len(embedding.data[0].embedding)


async def test_async_client_chat_stream_and_embeddings(async_client: openai.AsyncOpenAI) -> None:
    content, streamed, dimensions = await _async_roundtrip(async_client)
    assert content == streamed == "Echo: hello gateway"
    assert dimensions > 0


async def test_concurrent_async_requests_all_succeed(async_client: openai.AsyncOpenAI) -> None:
    calls = [
        async_client.chat.completions.create(model="mock-model", messages=[{"role": "user", "content": f"n{i}"}])
        for i in range(50)
    ]
    answers = await asyncio.gather(*calls)
    assert [a.choices[0].message.content for a in answers] == [f"Echo: n{i}" for i in range(50)]
