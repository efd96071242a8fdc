# mypy: disable-error-code="union-attr,index"
"""Smoke check: the official `openai` SDK (sync) parses everything the mock upstream says.

Run: `python -m load_tests.smoke_mock`. Starts the mock in a thread, drives every endpoint through the
SDK, plus the control endpoints and each fault, and fails loudly on the first surprise.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from load_tests.mock_upstream import MockConfig, running

USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]
TOOLS: list[ChatCompletionToolParam] = [
    {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}
]


def check_chat(client: OpenAI) -> None:
    answer = client.chat.completions.create(model="mock-model", messages=USER)
    assert answer.choices[0].message.content == "Echo: hello there", answer
    assert answer.model == "mock-model" and answer.usage and answer.usage.total_tokens == 5
    parts: list[ChatCompletionMessageParam] = [{"role": "user", "content": [{"type": "text", "text": "from parts"}]}]
    assert client.chat.completions.create(model="m", messages=parts).choices[0].message.content == "Echo: from parts"
    chunks = list(
        client.chat.completions.create(
            model="mock-model", messages=USER, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: hello there" and chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == "stop" and chunks[-1].usage.completion_tokens == 3


def check_tools_and_json(client: OpenAI) -> None:
    answer = client.chat.completions.create(model="mock-model", messages=USER, tools=TOOLS)
    call = answer.choices[0].message.tool_calls[0]
    assert answer.choices[0].finish_reason == "tool_calls" and call.function.name == "lookup"
    assert call.function.arguments == '{"echo":"hello there"}'
    stream = client.chat.completions.create(model="mock-model", messages=USER, tools=TOOLS, stream=True)
    arguments = "".join(
        c.choices[0].delta.tool_calls[0].function.arguments or "" for c in stream if c.choices[0].delta.tool_calls
    )
    assert arguments == '{"echo":"hello there"}', arguments
    none = client.chat.completions.create(model="mock-model", messages=USER, tools=TOOLS, tool_choice="none")
    assert none.choices[0].message.content == "Echo: hello there"
    json_answer = client.chat.completions.create(
        model="mock-model", messages=USER, response_format={"type": "json_object"}
    )
    assert json_answer.choices[0].message.content == '{"echo":"hello there"}'


def check_completions_embeddings_models(client: OpenAI) -> None:
    assert client.completions.create(model="mock-model", prompt="say hi").choices[0].text == "Echo: say hi"
    streamed = client.completions.create(model="mock-model", prompt="say hi", stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == "Echo: say hi"
    default = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    floats = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"], encoding_format="float")
    assert [d.embedding for d in default.data] == [d.embedding for d in floats.data]
    assert len(default.data[0].embedding) == 8 and default.data[0].embedding != default.data[1].embedding
    wide = client.embeddings.create(model="e", input="a", dimensions=32)
    assert len(wide.data[0].embedding) == 32
    assert "mock-model" in [m.id for m in client.models.list()]


def check_responses(client: OpenAI) -> None:
    answer = client.responses.create(model="mock-model", input="hi responses")
    assert answer.output_text == "Echo: hi responses" and answer.usage and answer.usage.total_tokens == 5
    items: Any = [{"role": "user", "content": [{"type": "input_text", "text": "from items"}]}]
    assert client.responses.create(model="mock-model", input=items).output_text == "Echo: from items"
    events = list(client.responses.create(model="mock-model", input="hi", stream=True))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == "Echo: hi" and events[-1].type == "response.completed"
    assert events[-1].response.output_text == "Echo: hi"
    assert [e.sequence_number for e in events] == list(range(len(events)))


def check_faults(url: str, client: OpenAI) -> None:
    control = httpx.Client(base_url=url)
    for model, error in (("fail503-mock", openai.InternalServerError), ("mock-fail429", openai.RateLimitError)):
        try:
            client.with_options(max_retries=0).chat.completions.create(model=model, messages=USER)
        except error:
            pass
        else:
            raise AssertionError(f"{model} did not fail")
    try:
        client.with_options(max_retries=0).chat.completions.create(model="drop-mock", messages=USER)
    except openai.APIConnectionError:
        pass
    else:
        raise AssertionError("drop-mock did not drop")
    received = []
    try:
        for chunk in client.with_options(max_retries=0).chat.completions.create(
            model="m-cut2", messages=USER, stream=True
        ):
            received.append(chunk)
    except openai.APIConnectionError:
        pass
    assert len(received) == 2, received
    control.post("/_mock/faults", json={"*": {"status": 500, "times": 1}})
    try:
        client.with_options(max_retries=0).chat.completions.create(model="mock-model", messages=USER)
    except openai.InternalServerError:
        pass
    assert client.chat.completions.create(model="mock-model", messages=USER).choices[0].message.content
    stats = control.get("/_mock/stats").json()
    assert stats["streams_aborted"] == 1 and stats["active_streams"] == 0, stats


def check_cancel_and_auth(url: str) -> None:
    with running(MockConfig(chunk_delay_ms=200, api_key="sk-test")) as slow:
        control = httpx.Client(base_url=slow.url)
        client = OpenAI(base_url=slow.url + "/v1", api_key="sk-test", max_retries=0)
        stream = client.chat.completions.create(model="m", messages=USER, stream=True)
        next(iter(stream))
        assert control.get("/_mock/stats").json()["active_streams"] == 1
        stream.close()
        time.sleep(0.3)
        stats = control.get("/_mock/stats").json()
        assert stats["active_streams"] == 0 and stats["streams_cancelled"] == 1, stats
        try:
            OpenAI(base_url=slow.url + "/v1", api_key="wrong", max_retries=0).models.list()
        except openai.AuthenticationError:
            pass
        recorded = control.get("/_mock/requests").json()
        assert recorded[0]["headers"]["authorization"] == "Bearer sk-test" and recorded[0]["body"]["model"] == "m"


def main() -> None:
    with running() as mock:
        client = OpenAI(base_url=mock.url + "/v1", api_key="sk-anything")
        check_chat(client)
        check_tools_and_json(client)
        check_completions_embeddings_models(client)
        check_responses(client)
        check_faults(mock.url, client)
    check_cancel_and_auth(mock.url)
    print("mock upstream: all SDK checks passed")


if __name__ == "__main__":
    main()
