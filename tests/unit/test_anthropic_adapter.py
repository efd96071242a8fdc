"""The Anthropic adapter translates OpenAI chat completions to Anthropic's Messages API and back, streams included.

Anthropic's side of each exchange is a recorded example from its API documentation (fixtures/anthropic, with
their sources in its README). The OpenAI side is checked against OpenAI's official spec where one is at hand.
"""

import json
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import InvalidRequest, UpstreamUnreachable
from gateway.settings import Deployment
from gateway.upstream import anthropic_request, anthropic_response, anthropic_stream
from gateway.upstream.adapters import Call, adapters
from gateway.upstream.anthropic import Anthropic
from tests.integration.test_bodies_match_openai_spec import SPEC, validator

FIXTURES = Path(__file__).parent / "fixtures" / "anthropic"
MODEL = "claude-sonnet-4-5"
DEPLOYMENT = Deployment(provider="anthropic", base_url="https://api.anthropic.com/v1", model=MODEL)
HELLO = [{"role": "user", "content": "Hello"}]


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def raw(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def translated(body: dict[str, Any]) -> dict[str, Any]:
    return anthropic_request.messages_body(body, MODEL)


def assert_spec(schema: str, body: Any) -> None:
    """`body` is valid by OpenAI's official spec (when the spec is at hand)."""
    if SPEC.exists():
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator(schema).iter_errors(body)]
        assert errors == [], f"{schema} rejects {body}"


# ---------------------------------------------------------------- the request


def test_the_request_goes_to_messages_with_anthropic_headers_and_no_bearer() -> None:
    deployment = Deployment(provider="anthropic", base_url="https://api.anthropic.com/v1", model=MODEL)
    call = Call(
        "chat/completions", {"model": "claude", "messages": HELLO}, b"", "rid-1", {"authorization": "Bearer gk"}
    )
    request = Anthropic().build_request(deployment, "sk-ant-secret", call)
    assert (request.method, request.url) == ("POST", "https://api.anthropic.com/v1/messages")
    assert request.headers["x-api-key"] == "sk-ant-secret"
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-request-id"] == "rid-1"
    assert "authorization" not in request.headers
    assert request.body is not None
    assert json.loads(request.body) == {"model": MODEL, "max_tokens": 4096, "messages": [HELLO[0]]}


def test_the_deployment_api_version_sets_the_anthropic_version_header() -> None:
    deployment = Deployment(provider="anthropic", base_url="http://h/v1", model=MODEL, api_version="2024-01-01")
    call = Call("chat/completions", {"model": "claude", "messages": HELLO}, b"", "rid", {})
    assert Anthropic().build_request(deployment, None, call).headers["anthropic-version"] == "2024-01-01"


def test_tools_and_tool_choice_translate_to_the_documented_request() -> None:
    assert translated(fixture("request_tools.openai.json")) == fixture("request_tools.anthropic.json")


def test_a_conversation_with_images_tool_calls_and_results_translates_as_documented() -> None:
    body = fixture("request_conversation.openai.json")
    original = json.dumps(body)
    assert translated(body) == fixture("request_conversation.anthropic.json")
    assert json.dumps(body) == original  # the client's request is never changed


def test_system_and_developer_messages_anywhere_join_into_the_system_prompt() -> None:
    body = translated(
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "hi"},
                {"role": "developer", "content": "Use French."},
            ]
        }
    )
    assert body["system"] == "Be brief.\n\nUse French."
    assert body["messages"] == [{"role": "user", "content": "hi"}]


def test_consecutive_turns_of_one_role_are_merged() -> None:
    messages = [
        {"role": "user", "content": "one"},
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": "three"},
        {"role": "assistant", "content": [{"type": "text", "text": "four"}]},
    ]
    assert translated({"messages": messages})["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "three"}, {"type": "text", "text": "four"}]},
    ]


@pytest.mark.parametrize(("stop", "sequences"), [("END", ["END"]), (["a", "b"], ["a", "b"]), (None, None)])
def test_stop_becomes_stop_sequences(stop: Any, sequences: list[str] | None) -> None:
    assert translated({"messages": HELLO, "stop": stop}).get("stop_sequences") == sequences


@pytest.mark.parametrize(
    ("fields", "max_tokens"),
    [({}, 4096), ({"max_tokens": 50}, 50), ({"max_tokens": 50, "max_completion_tokens": 70}, 70)],
)
def test_max_tokens_comes_from_the_request_or_defaults_to_4096(fields: dict[str, int], max_tokens: int) -> None:
    assert translated({"messages": HELLO, **fields})["max_tokens"] == max_tokens


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("required", {"type": "any"}),
        ("none", {"type": "none"}),
        ({"type": "function", "function": {"name": "get_weather"}}, {"type": "tool", "name": "get_weather"}),
        (None, None),
    ],
)
def test_tool_choice_maps_to_anthropic_tool_choice(choice: Any, expected: dict[str, str] | None) -> None:
    body = fixture("request_tools.openai.json") | {"tool_choice": choice}
    assert translated(body).get("tool_choice") == expected


def test_parallel_tool_calls_false_disables_parallel_tool_use() -> None:
    body = fixture("request_tools.openai.json") | {"tool_choice": None, "parallel_tool_calls": False}
    assert translated(body)["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


def test_user_becomes_metadata_user_id_and_unknown_fields_are_dropped() -> None:
    body = translated({"messages": HELLO, "user": "u-1", "seed": 1, "response_format": {"type": "json_object"}})
    assert body["metadata"] == {"user_id": "u-1"}
    assert "seed" not in body and "response_format" not in body


def one(message: dict[str, Any]) -> dict[str, Any]:
    return {"messages": [message]}


AUDIO = {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}
FTP_IMAGE = {"type": "image_url", "image_url": {"url": "ftp://host/cat.png"}}
LIST_ARGUMENTS = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}
REFUSED = [
    ({"n": 2}, "n"),
    ({"functions": [{"name": "f"}]}, "functions"),
    (one({"role": "user", "content": [AUDIO]}), "messages[0].content"),
    (one({"role": "user", "content": [FTP_IMAGE]}), "messages[0].content"),
    (one({"role": "function", "name": "f", "content": "x"}), "messages[0].role"),
    (one({"role": "assistant", "tool_calls": [LIST_ARGUMENTS]}), "messages[0].tool_calls"),
    (one({"role": "tool", "content": "15 degrees"}), "messages[0].tool_call_id"),
    ({"tools": [{"type": "web_search"}]}, "tools[0]"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "sometimes"}, "tool_choice"),
]


@pytest.mark.parametrize(("fields", "param"), REFUSED)
def test_what_anthropic_cannot_take_is_refused_with_a_400_naming_the_field(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        translated({"messages": HELLO, **fields})
    assert refused.value.status == 400
    assert refused.value.param == param


def test_only_chat_completions_is_served() -> None:
    adapter = adapters()["anthropic"]
    assert adapter.supports("chat/completions")
    assert not any(adapter.supports(e) for e in ("embeddings", "completions", "responses", "models"))


# ---------------------------------------------------------------- the answer


def test_a_text_message_becomes_a_chat_completion() -> None:
    body = json.loads(Anthropic().response_body(200, raw("message_text.json")))
    assert body["id"] == "msg_013Zva2CMHLNnXjNJJKqJ2EF"
    assert body["object"] == "chat.completion"
    assert body["model"] == "claude-sonnet-4-5-20250929"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Hi! My name is Claude.", "refusal": None}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["prompt_tokens"] == 2095
    assert body["usage"]["completion_tokens"] == 503
    assert body["usage"]["total_tokens"] == 2598
    assert_spec("CreateChatCompletionResponse", body)


def test_tool_use_becomes_tool_calls_with_json_string_arguments() -> None:
    body = json.loads(Anthropic().response_body(200, raw("message_tool_use.json")))
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "I'll check the current weather in San Francisco for you."
    [call] = choice["message"]["tool_calls"]
    assert call["id"] == "toolu_01A09q90qw90lq917835lq9"
    assert call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"location": "San Francisco, CA", "unit": "celsius"}
    assert body["usage"]["total_tokens"] == 0  # the documented example carries no usage
    assert_spec("CreateChatCompletionResponse", body)


def test_an_answer_of_only_tool_use_has_null_content() -> None:
    message = fixture("message_tool_use.json")
    message["content"] = message["content"][1:]
    body = anthropic_response.chat_completion(message, 0)
    assert body["choices"][0]["message"]["content"] is None


def test_cache_tokens_count_as_prompt_tokens_and_max_tokens_means_length() -> None:
    body = json.loads(Anthropic().response_body(200, raw("message_cached_usage.json")))
    assert body["usage"]["prompt_tokens"] == 21 + 188086
    assert body["usage"]["completion_tokens"] == 393
    assert body["usage"]["total_tokens"] == 21 + 188086 + 393
    assert body["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
     ("refusal", "content_filter"), (None, "stop")],
)  # fmt: skip
def test_stop_reasons_map_to_finish_reasons(stop_reason: str | None, finish_reason: str) -> None:
    assert anthropic_response.finish_reason(stop_reason) == finish_reason


def test_an_anthropic_error_becomes_openai_error_json() -> None:
    body = json.loads(Anthropic().response_body(529, raw("error_overloaded.json")))
    assert body == {
        "error": {"message": "Overloaded", "type": "server_error", "param": None, "code": "overloaded_error"}
    }
    assert_spec("ErrorResponse", body)


def test_a_prompt_too_long_error_is_a_context_length_exceeded_error() -> None:
    body = json.loads(Anthropic().response_body(400, raw("error_prompt_too_long.json")))
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["code"] == "context_length_exceeded"
    assert body["error"]["message"].startswith("prompt is too long")


@pytest.mark.parametrize(("status", "kind"), [(502, "server_error"), (404, "invalid_request_error")])
def test_a_body_that_is_not_anthropic_json_is_wrapped_in_an_openai_error(status: int, kind: str) -> None:
    body = json.loads(Anthropic().response_body(status, b"<html>Bad Gateway</html>"))
    assert body["error"]["message"] == f"The model server answered {status}: <html>Bad Gateway</html>"
    assert body["error"]["type"] == kind
    assert_spec("ErrorResponse", body)


# ---------------------------------------------------------------- the stream


async def upstream(pieces: Iterable[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


async def stream(pieces: Iterable[bytes], created: int = 1_700_000_000) -> list[bytes]:
    return [out async for out in anthropic_stream.translate(upstream(pieces), created)]


def events(output: list[bytes]) -> list[Any]:
    """The `data:` payloads of the OpenAI stream, "[DONE]" as a string."""
    lines = b"".join(output).decode().split("\n\n")
    assert lines[-1] == "", "every event ends with a blank line"
    payloads = [line.removeprefix("data: ") for line in lines[:-1]]
    return [payload if payload == "[DONE]" else json.loads(payload) for payload in payloads]


def content(chunks: list[Any]) -> str:
    return "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if isinstance(c, dict) and c.get("choices")
    )


async def test_a_text_stream_becomes_role_content_finish_usage_and_done() -> None:
    asked = Call("chat/completions", {"stream": True, "stream_options": {"include_usage": True}}, b"", "r", {})
    chunks = events([out async for out in Anthropic().stream(upstream([raw("stream_text.sse")]), asked)])
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert content(chunks) == "Hello!"
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-2]] == [None, None, None, "stop"]
    usage = chunks[-2]
    assert usage["choices"] == []
    assert usage["usage"]["prompt_tokens"] == 25 and usage["usage"]["completion_tokens"] == 15
    assert chunks[-1] == "[DONE]"
    assert {c["id"] for c in chunks[:-1]} == {"msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY"}
    for chunk in chunks[:-1]:
        assert chunk["object"] == "chat.completion.chunk"
        assert_spec("CreateChatCompletionStreamResponse", chunk)


async def test_without_include_usage_the_stream_has_no_usage_chunk() -> None:
    plain = Call("chat/completions", {"stream": True}, b"", "r", {})
    chunks = events([out async for out in Anthropic().stream(upstream([raw("stream_text.sse")]), plain)])
    assert chunks[-1] == "[DONE]"
    assert all(c["choices"] for c in chunks[:-1])


async def test_a_tool_use_stream_becomes_tool_call_deltas_that_reassemble() -> None:
    chunks = events(await stream([raw("stream_tool_use.sse")]))
    assert content(chunks) == "Okay, let's check the weather for San Francisco, CA:"
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks[:-2] if "tool_calls" in c["choices"][0]["delta"]]
    assert calls[0] == {
        "index": 0,
        "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert all(call["index"] == 0 and "id" not in call for call in calls[1:])
    arguments = "".join(call["function"]["arguments"] for call in calls)
    assert json.loads(arguments) == {"location": "San Francisco, CA", "unit": "fahrenheit"}
    assert chunks[-3]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-2]["usage"]["completion_tokens"] == 89
    assert chunks[-1] == "[DONE]"
    for chunk in chunks[:-1]:
        assert_spec("CreateChatCompletionStreamResponse", chunk)


@pytest.mark.parametrize("name", ["stream_text.sse", "stream_tool_use.sse"])
async def test_a_stream_cut_at_any_byte_translates_the_same(name: str) -> None:
    whole = raw(name)
    expected = events(await stream([whole]))
    for cut in range(1, len(whole)):
        assert events(await stream([whole[:cut], whole[cut:]])) == expected, f"cut at byte {cut}"
    assert events(await stream(whole[i : i + 1] for i in range(len(whole)))) == expected


async def test_crlf_line_endings_cut_between_cr_and_lf_are_understood() -> None:
    whole = raw("stream_text.sse").replace(b"\n", b"\r\n")
    expected = events(await stream([raw("stream_text.sse")]))
    cuts = [i + 1 for i in range(len(whole)) if whole[i : i + 1] == b"\r"]
    for cut in cuts:
        assert events(await stream([whole[:cut], whole[cut:]])) == expected


async def test_an_error_event_ends_the_stream_with_an_openai_error() -> None:
    chunks = events(await stream([raw("stream_error.sse")]))
    assert content(chunks) == "Hello"
    assert chunks[-1] == {
        "error": {"message": "Overloaded", "type": "server_error", "param": None, "code": "overloaded_error"}
    }


async def test_a_stream_that_ends_before_its_answer_ends_with_an_error() -> None:
    whole = raw("stream_text.sse")
    chunks = events(await stream([whole[: whole.index(b"event: content_block_stop")]]))
    assert content(chunks) == "Hello!"
    assert chunks[-1]["error"]["type"] == "server_error"
    assert "[DONE]" not in chunks


async def test_a_stream_cut_after_its_stop_reason_still_ends_normally() -> None:
    whole = raw("stream_text.sse")
    chunks = events(await stream([whole[: whole.index(b"event: message_stop")]]))
    assert chunks[-1] == "[DONE]"
    assert chunks[-2]["usage"]["completion_tokens"] == 15


async def test_usage_can_be_left_out_when_the_client_did_not_ask() -> None:
    output = events([out async for out in anthropic_stream.translate(upstream([raw("stream_text.sse")]), 0, False)])
    assert all(c == "[DONE]" or c["choices"] for c in output)


async def test_an_upstream_break_mid_stream_propagates_for_the_stage_to_report() -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield raw("stream_text.sse")[:400]
        raise UpstreamUnreachable("The model server could not be reached (ClientPayloadError).")

    received = []
    with pytest.raises(UpstreamUnreachable):
        async for out in anthropic_stream.translate(broken(), 0):
            received.append(out)
    assert events(received)[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
