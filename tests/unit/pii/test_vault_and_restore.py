"""Reversible pseudonymisation: the vault's placeholders, redaction of detected spans, and restoring placeholders
in whole answers and in SSE streams cut at awkward points."""

import itertools
from collections.abc import AsyncIterator, Iterable
from typing import Any

import orjson
import pytest

from gateway.pii.restore import StreamRestorer, restore_json
from gateway.pii.vault import Action, Span, Vault, redact, restore
from load_tests import mock_wire as wire

HEAD = {"id": "chatcmpl-1", "created": 1700000000, "model": "gpt-4o-mini"}
RESPONSE_HEAD = {"id": "resp_1", "created_at": 1700000000, "model": "gpt-4o-mini"}
SALT = b"per-deployment-salt"
EMAIL = "alice@example.com"
PSEUDO: dict[str, Action] = {"EMAIL_ADDRESS": "pseudonymise", "PHONE_NUMBER": "pseudonymise", "PERSON": "pseudonymise"}


def spans_of(text: str, entity: str, *values: str) -> list[Span]:
    """A span for every occurrence of each value in text."""
    found = []
    for value in values:
        start = text.find(value)
        while start >= 0:
            found.append(Span(start, start + len(value), entity))
            start = text.find(value, start + 1)
    return found


def vault_with(*pairs: tuple[str, str]) -> Vault:
    vault = Vault()
    for entity, value in pairs:
        vault.placeholder(entity, value)
    return vault


# ---------------------------------------------------------------- the vault and redact


def test_the_same_value_gets_the_same_placeholder_across_texts() -> None:
    vault = Vault()
    first = "Mail alice@example.com or bob@example.com"
    second = "Again: alice@example.com"
    one = redact(first, spans_of(first, "EMAIL_ADDRESS", EMAIL, "bob@example.com"), PSEUDO, vault, SALT)
    two = redact(second, spans_of(second, "EMAIL_ADDRESS", EMAIL), PSEUDO, vault, SALT)
    assert one == "Mail <EMAIL_ADDRESS_1> or <EMAIL_ADDRESS_2>"
    assert two == "Again: <EMAIL_ADDRESS_1>"
    assert vault.originals == {"<EMAIL_ADDRESS_1>": EMAIL, "<EMAIL_ADDRESS_2>": "bob@example.com"}
    assert vault.counts() == {("EMAIL_ADDRESS", "pseudonymise"): 3}


def test_placeholders_are_numbered_per_entity_type_from_one() -> None:
    vault = Vault()
    assert vault.placeholder("EMAIL_ADDRESS", "a@x.io") == "<EMAIL_ADDRESS_1>"
    assert vault.placeholder("PHONE_NUMBER", "555-0100") == "<PHONE_NUMBER_1>"
    assert vault.placeholder("EMAIL_ADDRESS", "b@x.io") == "<EMAIL_ADDRESS_2>"
    assert vault.placeholder("PHONE_NUMBER", "555-0199") == "<PHONE_NUMBER_2>"
    assert vault.placeholder("EMAIL_ADDRESS", "a@x.io") == "<EMAIL_ADDRESS_1>"
    assert vault.longest == len("<EMAIL_ADDRESS_2>")


def test_overlapping_spans_keep_the_longer_then_the_earlier() -> None:
    text = "call John Smith at 555-0100"
    spans = [
        Span(5, 9, "PERSON"),  # "John", inside the longer "John Smith"
        Span(5, 15, "PERSON"),  # "John Smith"
        Span(19, 24, "PHONE_NUMBER"),  # "555-0" and "0100" overlap, both 5 and 4 long...
        Span(20, 27, "PHONE_NUMBER"),  # "55-0100": longer than "555-0", kept
    ]
    vault = Vault()
    assert redact(text, spans, PSEUDO, vault, SALT) == "call <PERSON_1> at 5<PHONE_NUMBER_1>"
    assert vault.originals == {"<PERSON_1>": "John Smith", "<PHONE_NUMBER_1>": "55-0100"}

    tie = [Span(2, 5, "PERSON"), Span(0, 3, "PERSON")]  # same length: the earlier wins
    assert redact("abcdef", tie, PSEUDO, Vault(), SALT) == "<PERSON_1>def"


def test_mask_pseudonymise_and_hash_write_what_each_action_says() -> None:
    text = "alice@example.com, 555-0100, John"
    spans = [Span(0, 17, "EMAIL_ADDRESS"), Span(19, 27, "PHONE_NUMBER"), Span(29, 33, "PERSON")]
    actions: dict[str, Action] = {"EMAIL_ADDRESS": "hash", "PHONE_NUMBER": "mask", "PERSON": "pseudonymise"}
    vault = Vault()
    out = redact(text, spans, actions, vault, SALT)
    assert out == "<EMAIL_ADDRESS:6c24de52>, <PHONE_NUMBER>, <PERSON_1>"
    assert vault.originals == {"<PERSON_1>": "John"}  # only pseudonyms are restorable
    assert vault.counts() == {
        ("EMAIL_ADDRESS", "hash"): 1,
        ("PHONE_NUMBER", "mask"): 1,
        ("PERSON", "pseudonymise"): 1,
    }
    # The tag depends on the salt and the value, and is stable for both.
    assert vault.hashed("EMAIL_ADDRESS", EMAIL, SALT) == "<EMAIL_ADDRESS:6c24de52>"
    assert vault.hashed("EMAIL_ADDRESS", EMAIL, b"other") != "<EMAIL_ADDRESS:6c24de52>"
    assert vault.mask("EMAIL_ADDRESS") == "<EMAIL_ADDRESS>"


def test_block_and_unlisted_entities_are_left_in_the_text() -> None:
    text = "card 4111111111111111 mail alice@example.com"
    spans = [Span(5, 21, "CREDIT_CARD"), Span(27, 44, "EMAIL_ADDRESS"), Span(0, 4, "LOCATION")]
    actions: dict[str, Action] = {"CREDIT_CARD": "block", "EMAIL_ADDRESS": "mask"}
    vault = Vault()
    assert redact(text, spans, actions, vault, SALT) == "card 4111111111111111 mail <EMAIL_ADDRESS>"
    assert vault.counts() == {("EMAIL_ADDRESS", "mask"): 1}


def test_restore_replaces_repeated_placeholders_and_leaves_unknown_ones() -> None:
    vault = vault_with(("EMAIL_ADDRESS", EMAIL), ("PERSON", "Alice"))
    text = "<PERSON_1>: <EMAIL_ADDRESS_1>, again <EMAIL_ADDRESS_1><EMAIL_ADDRESS_1>; not <EMAIL_ADDRESS_7> or <PERSON>"
    assert restore(text, vault) == (f"Alice: {EMAIL}, again {EMAIL}{EMAIL}; not <EMAIL_ADDRESS_7> or <PERSON>")
    assert restore("no placeholders < here >", vault) == "no placeholders < here >"


def test_restore_does_not_touch_text_when_the_vault_has_no_pseudonyms() -> None:
    vault = Vault()
    vault.mask("EMAIL_ADDRESS")
    assert restore("<EMAIL_ADDRESS_1>", vault) == "<EMAIL_ADDRESS_1>"


def test_restore_escapes_values_inside_json_arguments() -> None:
    vault = vault_with(("PERSON", 'Al "the pal" \\ Capone'))
    arguments = '{"name": "<PERSON_1>"}'
    restored = restore(arguments, vault, json_string=True)
    assert orjson.loads(restored) == {"name": 'Al "the pal" \\ Capone'}


# ---------------------------------------------------------------- restore_json


def test_restore_json_restores_a_chat_completion() -> None:
    vault = vault_with(("EMAIL_ADDRESS", EMAIL))
    message = wire.chat_message("Write to <EMAIL_ADDRESS_1>.", None, "", "")
    body = wire.chat_completion(HEAD, message, "stop", wire.chat_usage(3, 4))
    out = orjson.loads(restore_json("chat/completions", body, vault))
    assert out["choices"][0]["message"]["content"] == f"Write to {EMAIL}."
    assert out["usage"] == wire.chat_usage(3, 4)


def test_restore_json_restores_chat_tool_call_arguments() -> None:
    vault = vault_with(("EMAIL_ADDRESS", EMAIL))
    message = wire.chat_message(None, "send", "call_1", '{"to": "<EMAIL_ADDRESS_1>"}')
    body = wire.chat_completion(HEAD, message, "tool_calls", wire.chat_usage(3, 4))
    out = orjson.loads(restore_json("chat/completions", body, vault))
    assert orjson.loads(out["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]) == {"to": EMAIL}


def test_restore_json_restores_a_responses_body() -> None:
    vault = vault_with(("EMAIL_ADDRESS", EMAIL))
    text = "Mail <EMAIL_ADDRESS_1> now"
    item = wire.output_message("msg_1", text)
    body = orjson.dumps(
        {
            **wire.response_object({}, RESPONSE_HEAD, [item], wire.responses_usage(3, 4), "completed"),
            "output_text": text,
        }
    )
    out = orjson.loads(restore_json("responses", body, vault))
    assert out["output"][0]["content"][0]["text"] == f"Mail {EMAIL} now"
    assert out["output_text"] == f"Mail {EMAIL} now"


def test_restore_json_returns_the_same_bytes_when_there_is_nothing_to_restore() -> None:
    body = wire.chat_completion(HEAD, wire.chat_message("<EMAIL_ADDRESS_1>", None, "", ""), "stop", {})
    assert restore_json("chat/completions", body, Vault()) is body  # no pseudonyms issued
    plain = wire.chat_completion(HEAD, wire.chat_message("no angle brackets", None, "", ""), "stop", {})
    assert restore_json("chat/completions", plain, vault_with(("EMAIL_ADDRESS", EMAIL))) is plain
    unknown = wire.chat_completion(HEAD, wire.chat_message("<PERSON_9>", None, "", ""), "stop", {})
    assert restore_json("chat/completions", unknown, vault_with(("EMAIL_ADDRESS", EMAIL))) is unknown


def test_restore_json_handles_an_escaped_angle_bracket() -> None:
    vault = vault_with(("EMAIL_ADDRESS", EMAIL))
    body = b'{"choices":[{"index":0,"message":{"role":"assistant","content":"\\u003cEMAIL_ADDRESS_1>"}}]}'
    out = orjson.loads(restore_json("chat/completions", body, vault))
    assert out["choices"][0]["message"]["content"] == EMAIL


# ---------------------------------------------------------------- streams


async def source(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def run(endpoint: str, vault: Vault, chunks: Iterable[bytes]) -> list[bytes]:
    return [piece async for piece in StreamRestorer(endpoint, vault).run(source(chunks))]


def payloads(data: bytes) -> list[Any]:
    """The data of every event: parsed JSON, or the raw bytes ([DONE])."""
    out: list[Any] = []
    for event in data.split(b"\n\n"):
        lines = [line[6:] for line in event.split(b"\n") if line.startswith(b"data: ")]
        if lines:
            data_ = lines[0]
            out.append(data_ if data_ == b"[DONE]" else orjson.loads(data_))
    return out


def chat_stream(deltas: list[str], usage: bool = True) -> bytes:
    chunks: list[dict[str, Any]] = [{"content": d} for d in deltas]
    chunks[0] = {"role": "assistant", **chunks[0]}
    return b"".join(wire.chat_chunks(HEAD, chunks, "stop", wire.chat_usage(3, len(deltas)) if usage else None))


def chat_contents(data: bytes) -> list[str]:
    return [
        choice["delta"]["content"]
        for event in payloads(data)
        if isinstance(event, dict)
        for choice in event["choices"]
        if isinstance(choice["delta"].get("content"), str)
    ]


def per_event(data: bytes) -> list[bytes]:
    return [event + b"\n\n" for event in data.split(b"\n\n") if event]


def cut(data: bytes, positions: Iterable[int]) -> list[bytes]:
    points = [0, *sorted(set(p for p in positions if 0 < p < len(data))), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points)]


async def test_a_placeholder_split_across_three_chunks_reaches_the_client_restored() -> None:
    vault = vault_with(("EMAIL_ADDRESS", EMAIL))
    stream = chat_stream(["Write to <EMA", "IL_ADD", "RESS_1> today"])
    out = b"".join(await run("chat/completions", vault, per_event(stream)))
    contents = chat_contents(out)
    assert "".join(contents) == f"Write to {EMAIL} today"
    assert contents == ["Write to ", "", f"{EMAIL} today"]
    assert b"<EMA" not in out and b"IL_ADD" not in out and b"RESS_1" not in out
    # Everything else passes as it came: role, finish chunk, usage chunk, [DONE].
    events = payloads(out)
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert events[-3]["choices"][0]["finish_reason"] == "stop"
    assert events[-2]["usage"] == wire.chat_usage(3, 3)
    assert events[-1] == b"[DONE]"


@pytest.mark.parametrize("step", [1, 7, 50])
async def test_network_chunking_does_not_change_what_the_client_gets(step: int) -> None:
    vault = vault_with(("EMAIL_ADDRESS", EMAIL))
    stream = chat_stream(["Write to <EMA", "IL_ADD", "RESS_1> today"])
    out = b"".join(await run("chat/completions", vault, cut(stream, range(0, len(stream), step))))
    assert "".join(chat_contents(out)) == f"Write to {EMAIL} today"
    assert b"<EMA" not in out


async def test_an_angle_bracket_that_is_no_placeholder_is_released_without_loss_or_duplication() -> None:
    vault = vault_with(("EMAIL_ADDRESS", EMAIL))  # longest placeholder: 17 characters
    deltas = ["if a <", " b then", " x <", "Y", "Z and so on", " <ABCDEFGHIJ", "KLMNOPQRSTUVWXYZ", " end <"]
    out = b"".join(await run("chat/completions", vault, per_event(chat_stream(deltas))))
    contents = chat_contents(out)
    assert "".join(contents) == "".join(deltas)
    # "<" is held only while it may still start a placeholder: " b" shows it cannot.
    assert contents[:2] == ["if a ", "< b then"]
    # An uppercase run is held up to the length bound, then released as it is.
    assert contents[5:7] == [" ", "<ABCDEFGHIJKLMNOPQRSTUVWXYZ"]
    # A "<" held at the end of the key is flushed before the finish chunk, in a delta event of its own.
    assert contents[-1] == "<"
    events = payloads(out)
    finish = next(
        i for i, e in enumerate(events) if isinstance(e, dict) and e["choices"][:1] and e["choices"][0]["finish_reason"]
    )
    assert events[finish - 1]["choices"][0]["delta"] == {"content": "<"}


async def test_held_text_is_flushed_at_the_end_of_a_stream_without_a_finish() -> None:
    vault = vault_with(("EMAIL_ADDRESS", EMAIL))
    stream = b"".join(
        wire.sse(
            {
                "object": "chat.completion.chunk",
                **HEAD,
                "choices": [{"index": 0, "delta": {"content": c}, "logprobs": None, "finish_reason": None}],
            }
        )
        for c in ["hi <EMAIL_ADDRESS_1> and <EMAIL_ADDR"]
    )
    out = b"".join(await run("chat/completions", vault, [stream]))
    assert "".join(chat_contents(out)) == f"hi {EMAIL} and <EMAIL_ADDR"


async def test_tool_call_arguments_are_restored_in_a_chat_stream() -> None:
    vault = vault_with(("EMAIL_ADDRESS", EMAIL))
    deltas = wire.tool_deltas("send", "call_1", "")[:1] + [
        {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
        for piece in ['{"to": "<EMAIL_', "ADDRESS_1", '>"}']
    ]
    stream = b"".join(wire.chat_chunks(HEAD, deltas, "tool_calls", None))
    out = b"".join(await run("chat/completions", vault, per_event(stream)))
    arguments = "".join(
        call["function"].get("arguments", "")
        for event in payloads(out)
        if isinstance(event, dict)
        for choice in event["choices"]
        for call in choice["delta"].get("tool_calls", [])
    )
    assert orjson.loads(arguments) == {"to": EMAIL}


async def test_a_completions_stream_is_restored() -> None:
    vault = vault_with(("EMAIL_ADDRESS", EMAIL), ("PERSON", "Alice"))
    text = "Dear <PERSON_1>, mail <EMAIL_ADDRESS_1> please <PERSON_1>"
    stream = b"".join(wire.completion_chunks(HEAD, text, "stop", None))
    out = b"".join(await run("completions", vault, cut(stream, range(0, len(stream), 13))))
    texts = [c["text"] for e in payloads(out) if isinstance(e, dict) for c in e["choices"]]
    assert "".join(texts) == f"Dear Alice, mail {EMAIL} please Alice"
    assert not any("<" in t for t in texts)


async def test_a_completions_placeholder_cut_before_the_finishing_chunk_is_restored_in_it() -> None:
    vault = vault_with(("EMAIL_ADDRESS", EMAIL))
    base = {"object": "text_completion", **HEAD}
    stream = b"".join(
        wire.sse({**base, "choices": [{"text": t, "index": 0, "logprobs": None, "finish_reason": f}]})
        for t, f in [("to <EMAIL_ADD", None), ("RESS_1>", "stop")]
    )
    out = b"".join(await run("completions", vault, per_event(stream)))
    texts = [c["text"] for e in payloads(out) if isinstance(e, dict) for c in e["choices"]]
    assert texts == ["to ", EMAIL]


async def test_a_responses_stream_is_restored_deltas_and_done_events() -> None:
    vault = vault_with(("EMAIL_ADDRESS", EMAIL))
    text = "Mail <EMAIL_ADDRESS_1> today <EMAIL_ADDRESS_1>"
    events = list(wire.response_events({}, RESPONSE_HEAD, "msg_1", text, wire.responses_usage(3, 5)))
    # The mock streams "<EMAIL_ADDRESS_1>" as one delta; the network cuts every 11 bytes, inside events.
    out = b"".join(await run("responses", vault, cut(b"".join(events), range(0, 10000, 11))))
    parsed = payloads(out)
    deltas = [e["delta"] for e in parsed if e["type"] == "response.output_text.delta"]
    restored = f"Mail {EMAIL} today {EMAIL}"
    assert "".join(deltas) == restored
    done = next(e for e in parsed if e["type"] == "response.output_text.done")
    assert done["text"] == restored
    completed = parsed[-1]
    assert completed["type"] == "response.completed"
    assert completed["response"]["output"][0]["content"][0]["text"] == restored
    assert b"EMAIL_ADDRESS_1" not in out


async def test_a_responses_delta_held_at_the_done_event_is_flushed_before_it() -> None:
    vault = vault_with(("EMAIL_ADDRESS", EMAIL))
    where = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    stream = b"".join(
        wire.sse_event(
            {"type": "response.output_text.delta", **where, "delta": d, "logprobs": [], "sequence_number": n}
        )
        for n, d in enumerate(["x <EMAIL_", "ADDRESS_1> y <"])
    ) + wire.sse_event(
        {"type": "response.output_text.done", **where, "text": "x <EMAIL_ADDRESS_1> y <", "logprobs": []}
    )
    out = b"".join(await run("responses", vault, per_event(stream)))
    parsed = payloads(out)
    assert [e["type"] for e in parsed] == ["response.output_text.delta"] * 3 + ["response.output_text.done"]
    assert [e["delta"] for e in parsed[:3]] == ["x ", f"{EMAIL} y ", "<"]
    assert parsed[3]["text"] == f"x {EMAIL} y <"


async def test_a_stream_passes_untouched_when_the_vault_has_no_pseudonyms() -> None:
    vault = Vault()
    vault.mask("EMAIL_ADDRESS")
    stream = chat_stream(["Write to <EMA", "IL_ADD", "RESS_1> today"])
    chunks = cut(stream, range(0, len(stream), 29))
    out = await run("chat/completions", vault, chunks)
    assert out == chunks


async def test_events_without_a_placeholder_go_out_as_their_original_bytes() -> None:
    vault = vault_with(("EMAIL_ADDRESS", EMAIL))
    stream = chat_stream(["Hello", " there", ", a <EMAIL_ADDRESS_1> for you"])
    out = b"".join(await run("chat/completions", vault, per_event(stream)))
    original = per_event(stream)
    restored = per_event(out)
    assert len(restored) == len(original)
    changed = [i for i, (a, b) in enumerate(zip(original, restored, strict=True)) if a != b]
    assert changed == [2]
    assert chat_contents(restored[2])[0] == f", a {EMAIL} for you"
