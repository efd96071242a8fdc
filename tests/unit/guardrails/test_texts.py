"""Every string a model reads or writes is found in real-shaped OpenAI bodies, nothing else; odd shapes never raise."""

from typing import Any

import orjson
import pytest

from gateway.guardrails.texts import (
    EVERY_KEY,
    Slot,
    drop_logprobs,
    ended,
    request_slots,
    response_slots,
    stream_delta_event,
    stream_ends,
    stream_slots,
    stream_snapshots,
)
from load_tests import mock_wire as wire

HEAD = {"id": "chatcmpl-1", "created": 1700000000, "model": "gpt-4o-mini"}


def texts(slots: list[Slot]) -> list[str]:
    return [slot.get() for slot in slots]


def keyed(pairs: list[tuple[str, Slot]]) -> list[tuple[str, str]]:
    return [(key, slot.get()) for key, slot in pairs]


# ---------------------------------------------------------------- requests


def test_chat_request_finds_every_message_text_in_order() -> None:
    body = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "developer", "content": [{"type": "text", "text": "dev rules"}]},
            {
                "role": "user",
                "name": "alice",
                "content": [
                    {"type": "text", "text": "look at this"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                    {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
                    {"type": "file", "file": {"file_id": "file-1"}},
                    {"type": "text", "text": "and this"},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "refusal": "I can't",
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}},
                    {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": '{"b": 2}'}},
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "tool said"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "tool parts"}]},
            {"role": "assistant", "content": "", "function_call": {"name": "f", "arguments": "{}"}},
            {"role": "function", "name": "f", "content": "function said"},
            {"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "refusal", "refusal": "no"}]},
        ],
    }
    assert texts(request_slots("chat/completions", body)) == [
        "be brief",
        "dev rules",
        "look at this",
        "and this",
        "I can't",
        '{"a": 1}',
        '{"b": 2}',
        "tool said",
        "tool parts",
        "",
        "{}",
        "function said",
        "a",
        "no",
    ]


def test_slots_rewrite_the_body_in_place() -> None:
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "my secret"}]}]}
    (slot,) = request_slots("chat/completions", body)
    slot.set("my [REDACTED]")
    assert body == {"messages": [{"role": "user", "content": [{"type": "text", "text": "my [REDACTED]"}]}]}


def test_names_and_ids_are_not_model_text() -> None:
    body = {"messages": [{"role": "user", "name": "alice", "content": "hi"}], "user": "u-1", "model": "m"}
    assert texts(request_slots("chat/completions", body)) == ["hi"]


def test_completions_prompt_strings_and_suffix_but_not_token_arrays() -> None:
    assert texts(request_slots("completions", {"prompt": "once upon", "suffix": "the end"})) == ["once upon", "the end"]
    body = {"prompt": ["one", [1, 2, 3], "two", 7]}
    assert texts(request_slots("completions", body)) == ["one", "two"]
    assert request_slots("completions", {"prompt": [1, 2, 3]}) == []
    assert request_slots("completions", {"prompt": [[1, 2], [3]]}) == []


def test_embeddings_input_strings_but_not_token_arrays() -> None:
    assert texts(request_slots("embeddings", {"input": "embed me"})) == ["embed me"]
    assert texts(request_slots("embeddings", {"input": ["a", "b", [1, 2]]})) == ["a", "b"]
    assert request_slots("embeddings", {"input": [101, 102]}) == []


def test_responses_request_instructions_and_string_input() -> None:
    body = {"model": "gpt-4o-mini", "instructions": "be kind", "input": "hello"}
    assert texts(request_slots("responses", body)) == ["be kind", "hello"]


def test_responses_request_input_items() -> None:
    body = {
        "input": [
            {"role": "user", "content": "plain"},
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "part one"},
                    {"type": "input_image", "image_url": "https://example.com/a.png"},
                    {"type": "input_file", "file_id": "file-1"},
                ],
            },
            {
                "type": "message",
                "role": "assistant",
                "id": "msg_1",
                "status": "completed",
                "content": [{"type": "output_text", "text": "earlier answer", "annotations": []}],
            },
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "thinking"}]},
            {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": '{"q": "x"}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "result text"},
            {
                "type": "function_call_output",
                "call_id": "call_2",
                "output": [{"type": "input_text", "text": "listed result"}, {"type": "input_image", "file_id": "f"}],
            },
            {"type": "custom_tool_call", "call_id": "call_3", "name": "sh", "input": "ls -la"},
            {"type": "custom_tool_call_output", "call_id": "call_3", "output": "total 0"},
            {"type": "item_reference", "id": "msg_0"},
        ]
    }
    assert texts(request_slots("responses", body)) == [
        "plain",
        "part one",
        "earlier answer",
        '{"q": "x"}',
        "result text",
        "listed result",
        "ls -la",
        "total 0",
    ]


@pytest.mark.parametrize("endpoint", ["chat/completions", "completions", "embeddings", "responses", "other"])
@pytest.mark.parametrize(
    "body",
    [
        {},
        {"messages": "hi", "prompt": {"a": 1}, "input": 5, "instructions": ["x"], "suffix": None},
        {"messages": [None, 3, "str", {"content": 5}, {"content": [None, {"type": "text", "text": 5}]}]},
        {"messages": [{"role": "assistant", "tool_calls": [None, {"function": "f"}, {"function": {"arguments": 1}}]}]},
        {"input": [None, {"type": "message", "content": {"text": "x"}}, {"type": "function_call_output"}]},
        {"input": [{"type": 5}, {"role": "user", "content": [{"type": None, "text": "x"}]}]},
    ],
)
def test_wrong_shapes_are_skipped_never_raise(endpoint: str, body: dict[str, Any]) -> None:
    assert request_slots(endpoint, body) == []
    assert response_slots(endpoint, body) == []
    assert stream_slots(endpoint, body) == []
    assert stream_snapshots(endpoint, body) == []


def test_a_body_that_is_not_an_object_has_no_text() -> None:
    for endpoint in ("chat/completions", "completions", "embeddings", "responses"):
        assert request_slots(endpoint, ["hello"]) == []  # type: ignore[arg-type]
        assert response_slots(endpoint, "hello") == []  # type: ignore[arg-type]
        assert stream_slots(endpoint, None) == []  # type: ignore[arg-type]
        assert stream_ends(endpoint, 3) == []  # type: ignore[arg-type]


# ---------------------------------------------------------------- non-streamed answers


def test_chat_answer_content_refusal_and_tool_call_arguments() -> None:
    message = wire.chat_message("the answer", "lookup", "call_1", '{"q": "x"}')
    body = orjson.loads(wire.chat_completion(HEAD, message, "tool_calls", wire.chat_usage(1, 2)))
    body["choices"].append(
        {"index": 1, "message": {"role": "assistant", "content": None, "refusal": "no way"}, "finish_reason": "stop"}
    )
    body["choices"].append({"index": 2, "message": {"role": "assistant", "function_call": {"arguments": "{}"}}})
    assert texts(response_slots("chat/completions", body)) == ["the answer", '{"q": "x"}', "no way", "{}"]


def test_completions_answer_choice_texts() -> None:
    body = orjson.loads(wire.completion(HEAD, "text one", "stop", wire.chat_usage(1, 2)))
    assert texts(response_slots("completions", body)) == ["text one"]


def test_responses_answer_output_text_refusal_and_function_call() -> None:
    output = [
        {"type": "reasoning", "id": "rs_1", "summary": []},
        wire.output_message("msg_1", "hello there"),
        {
            "type": "message",
            "id": "msg_2",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "refusal", "refusal": "cannot"}],
        },
        {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f", "arguments": '{"a": 1}'},
    ]
    head = {"id": "resp_1", "created_at": 1700000000, "model": "gpt-4o-mini"}
    body = wire.response_object({}, head, output, None, "completed")
    body["output_text"] = "hello there"
    assert texts(response_slots("responses", body)) == ["hello there", "cannot", '{"a": 1}', "hello there"]


def test_embeddings_answer_has_no_text() -> None:
    body = orjson.loads(wire.embeddings("m", ["a"], 4, False))
    assert response_slots("embeddings", body) == []


# ---------------------------------------------------------------- streams


def sse_payloads(stream: bytes) -> list[Any]:
    """The data of each event of an SSE byte stream ([DONE] kept as the string)."""
    payloads = []
    for event in stream.split(b"\n\n"):
        for line in event.split(b"\n"):
            if line.startswith(b"data: "):
                data = line[6:]
                payloads.append(data.decode() if data == b"[DONE]" else orjson.loads(data))
    return payloads


def test_chat_stream_content_deltas_are_keyed_by_choice() -> None:
    events = sse_payloads(b"".join(wire.chat_chunks(HEAD, wire.text_deltas("Hello big world"), "stop", None)))
    assert [keyed(stream_slots("chat/completions", e)) for e in events[:-1]] == [
        [("0:content", "Hello")],
        [("0:content", " big")],
        [("0:content", " world")],
        [],
    ]
    assert [stream_ends("chat/completions", e) for e in events[:-1]] == [[], [], [], ["0"]]


def test_chat_stream_tool_call_and_refusal_deltas_have_their_own_keys() -> None:
    event = {
        "object": "chat.completion.chunk",
        "choices": [
            {
                "index": 1,
                "delta": {
                    "content": "c",
                    "refusal": "r",
                    "tool_calls": [
                        {"index": 0, "function": {"arguments": '{"a'}},
                        {"index": 2, "id": "call_2", "type": "function", "function": {"name": "g", "arguments": ""}},
                    ],
                    "function_call": {"arguments": "x"},
                },
                "finish_reason": None,
            }
        ],
    }
    assert keyed(stream_slots("chat/completions", event)) == [
        ("1:content", "c"),
        ("1:refusal", "r"),
        ("1:tool:0", '{"a'),
        ("1:tool:2", ""),
        ("1:function", "x"),
    ]


def test_chat_usage_chunk_and_role_chunk_carry_no_text() -> None:
    usage = {"object": "chat.completion.chunk", "choices": [], "usage": {"total_tokens": 3}}
    role = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": None}, "finish_reason": None}]}
    assert stream_slots("chat/completions", usage) == stream_slots("chat/completions", role) == []
    assert stream_ends("chat/completions", usage) == []


def test_chat_error_event_ends_every_key() -> None:
    assert stream_ends("chat/completions", {"error": {"message": "boom"}}) == [EVERY_KEY]


def test_completions_stream_text_and_finish() -> None:
    events = sse_payloads(b"".join(wire.completion_chunks(HEAD, "one two", "length", None)))
    assert [keyed(stream_slots("completions", e)) for e in events[:-1]] == [[("0:text", "one")], [("0:text", " two")]]
    assert [stream_ends("completions", e) for e in events[:-1]] == [[], ["0"]]


def test_responses_stream_text_deltas_and_the_events_that_end_them() -> None:
    head = {"id": "resp_1", "created_at": 1700000000, "model": "gpt-4o-mini"}
    stream = b"".join(wire.response_events({}, head, "msg_1", "Hi you", wire.responses_usage(1, 2)))
    events = sse_payloads(stream)
    deltas = [keyed(stream_slots("responses", e)) for e in events]
    assert [d for d in deltas if d] == [[("0:text:0", "Hi")], [("0:text:0", " you")]]
    ends = {e["type"]: stream_ends("responses", e) for e in events}
    assert ends["response.output_text.done"] == ["0:text:0"]
    assert ends["response.content_part.done"] == ["0:text:0", "0:refusal:0"]
    assert ends["response.output_item.done"] == ["0"]
    assert ends["response.completed"] == [EVERY_KEY]
    assert ends["response.output_text.delta"] == ends["response.created"] == []


def test_responses_stream_refusal_argument_and_custom_input_deltas() -> None:
    refusal = {"type": "response.refusal.delta", "output_index": 1, "content_index": 2, "delta": "no"}
    arguments = {"type": "response.function_call_arguments.delta", "output_index": 3, "delta": '{"a"'}
    custom = {"type": "response.custom_tool_call_input.delta", "output_index": 4, "delta": "ls"}
    reasoning = {"type": "response.reasoning_summary_text.delta", "output_index": 0, "delta": "hmm"}
    assert keyed(stream_slots("responses", refusal)) == [("1:refusal:2", "no")]
    assert keyed(stream_slots("responses", arguments)) == [("3:arguments", '{"a"')]
    assert keyed(stream_slots("responses", custom)) == [("4:input", "ls")]
    assert stream_slots("responses", reasoning) == []
    done = {"type": "response.function_call_arguments.done", "output_index": 3, "arguments": '{"a": 1}'}
    assert stream_ends("responses", done) == ["3:arguments"]
    assert texts(stream_snapshots("responses", done)) == ['{"a": 1}']


def test_responses_done_events_and_response_objects_restate_the_full_text() -> None:
    head = {"id": "resp_1", "created_at": 1700000000, "model": "gpt-4o-mini"}
    stream = b"".join(wire.response_events({}, head, "msg_1", "Hi you", wire.responses_usage(1, 2)))
    snapshots = {e["type"]: texts(stream_snapshots("responses", e)) for e in sse_payloads(stream)}
    assert snapshots["response.output_text.done"] == ["Hi you"]
    assert snapshots["response.content_part.done"] == ["Hi you"]
    assert snapshots["response.content_part.added"] == [""]
    assert snapshots["response.output_item.done"] == ["Hi you"]
    assert snapshots["response.completed"] == ["Hi you"]
    assert snapshots["response.created"] == snapshots["response.output_text.delta"] == []


def test_scopes_cover_a_key_its_prefix_or_everything() -> None:
    assert ended("0:tool:1", "0")
    assert ended("0:text:0", "0:text:0")
    assert ended("3:content", EVERY_KEY)
    assert not ended("10:content", "1")
    assert not ended("0:text:1", "0:text:0")


def test_delta_event_for_a_chat_key_carries_only_that_text() -> None:
    template = {
        "object": "chat.completion.chunk",
        **HEAD,
        "choices": [
            {
                "index": 1,
                "delta": {"role": "assistant", "tool_calls": [{"index": 2, "id": "c", "function": {"name": "f"}}]},
                "finish_reason": None,
            }
        ],
        "usage": None,
    }
    event = stream_delta_event("chat/completions", template, "1:tool:2", "rest")
    assert event == {
        "object": "chat.completion.chunk",
        **HEAD,
        "usage": None,
        "choices": [
            {
                "index": 1,
                "delta": {"tool_calls": [{"index": 2, "function": {"arguments": "rest"}}]},
                "logprobs": None,
                "finish_reason": None,
            }
        ],
    }
    assert stream_delta_event("chat/completions", template, "1:content", "x")["choices"][0]["delta"] == {  # type: ignore[index]
        "content": "x"
    }
    assert stream_delta_event("chat/completions", template, "bad", "x") is None


def test_delta_event_for_completions_and_responses_keys() -> None:
    template = {"object": "text_completion", **HEAD, "choices": [{"text": "a", "index": 0, "finish_reason": None}]}
    event = stream_delta_event("completions", template, "0:text", "tail")
    assert event is not None and event["choices"] == [
        {"text": "tail", "index": 0, "logprobs": None, "finish_reason": None}
    ]
    delta = {"type": "response.output_text.delta", "output_index": 0, "content_index": 0, "delta": "a", "logprobs": [1]}
    assert stream_delta_event("responses", {**delta, "sequence_number": 7}, "0:text:0", "tail") == {
        **delta,
        "delta": "tail",
        "logprobs": [],
        "sequence_number": 7,
    }


def test_drop_logprobs_clears_chat_choices_and_responses_parts() -> None:
    chunk = {"choices": [{"index": 0, "delta": {}, "logprobs": {"content": [{"token": "a"}]}}, {"logprobs": None}]}
    assert drop_logprobs("chat/completions", chunk)
    assert chunk["choices"] == [{"index": 0, "delta": {}, "logprobs": None}, {"logprobs": None}]
    assert not drop_logprobs("chat/completions", chunk)
    part = {"type": "output_text", "text": "x", "logprobs": [{"token": "x"}]}
    completed = {"type": "response.completed", "response": {"output": [{"type": "message", "content": [part]}]}}
    assert drop_logprobs("responses", completed)
    assert part["logprobs"] == []
    delta = {"type": "response.output_text.delta", "delta": "x", "logprobs": [{"token": "x"}]}
    assert drop_logprobs("responses", delta) and delta["logprobs"] == []
    assert not drop_logprobs("embeddings", {"logprobs": [1]})
