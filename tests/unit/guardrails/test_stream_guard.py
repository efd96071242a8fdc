"""The stream guard checks SSE answers as they flow, whatever the network chunking, and `scan_json` whole answers.

The checks here are mostly tiny literal-term checks built in this file, so the guard is tested on its own;
the tests of tentative findings (a hit at the end of the text so far, which more text may undo) use the real
word-boundary `Terms` of gateway.guardrails.text.
"""

import itertools
import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.guardrails.base import Action, Finding, Hit, TextRule, apply
from gateway.guardrails.stream import StreamGuard, scan_json
from gateway.guardrails.text import Terms
from gateway.upstream.openai_wire import stream_error_event
from load_tests import mock_wire as wire

HEAD = {"id": "chatcmpl-1", "created": 1700000000, "model": "gpt-4o-mini"}
RESPONSE_HEAD = {"id": "resp_1", "created_at": 1700000000, "model": "gpt-4o-mini"}
BLOCKED = b"data: BLOCKED\n\n"


@dataclass(frozen=True)
class Term:
    """A literal-term check: every occurrence of `term`, window len(term)."""

    term: str

    @property
    def window(self) -> int:
        return len(self.term)

    def scan(self, text: str) -> list[Hit]:
        return [Hit(m.start(), m.end(), self.term) for m in re.finditer(re.escape(self.term), text)]


def rule(action: Action, term: str, replacement: str = "[REDACTED]") -> TextRule:
    return TextRule("policy", f"{action}-{term}", action, f"no {term}", Term(term), replacement)


def word(action: Action, term: str, replacement: str = "[REDACTED]") -> TextRule:
    """A rule with the real word-boundary `Terms` check: "class" is not found in "classification"."""
    return TextRule("policy", f"{action}-{term}", action, f"no {term}", Terms([term]), replacement)


# ---------------------------------------------------------------- streams and how the client sees them


def chat_stream(deltas: list[str], finish: str = "stop", usage: bool = True) -> bytes:
    chunks = [{"content": d} for d in deltas]
    if chunks:
        chunks[0] = {"role": "assistant", **chunks[0]}
    return b"".join(wire.chat_chunks(HEAD, chunks, finish, wire.chat_usage(3, len(deltas)) if usage else None))


def sse(payload: dict[str, Any]) -> bytes:
    return wire.sse(payload)


def chunk_event(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
    return {"object": "chat.completion.chunk", **HEAD, "choices": [choice]}


def cut(data: bytes, positions: Iterable[int]) -> list[bytes]:
    """`data` cut at the given byte positions."""
    points = [0, *sorted(set(p for p in positions if 0 < p < len(data))), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points)]


def per_event(data: bytes) -> list[bytes]:
    return [event + b"\n\n" for event in data.split(b"\n\n") if event]


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


async def source(chunks: list[bytes], pulled: list[int] | None = None) -> AsyncIterator[bytes]:
    for number, chunk in enumerate(chunks):
        if pulled is not None:
            pulled.append(number)
        yield chunk


class Run:
    """One guarded stream: what the client received and what was recorded."""

    def __init__(self, out: list[bytes], recorded: list[Finding]) -> None:
        self.out = out
        self.recorded = recorded
        self.data = b"".join(out)

    def payloads(self) -> list[Any]:
        """The data of each event the client got, [DONE] and non-JSON data as strings."""
        found = []
        for event in re.split(rb"\r?\n\r?\n", self.data):
            lines = [line.removesuffix(b"\r") for line in event.split(b"\n")]
            data = b"\n".join(line[5:].removeprefix(b" ") for line in lines if line.startswith(b"data:"))
            if data:
                try:
                    found.append(orjson.loads(data))
                except orjson.JSONDecodeError:
                    found.append(data.decode(errors="replace"))
        return found

    def chat_text(self, choice: int = 0, field: str = "content") -> str:
        return "".join(
            c["delta"].get(field) or ""
            for p in self.payloads()
            if isinstance(p, dict)
            for c in p.get("choices") or []
            if c["index"] == choice
        )

    def chat_deltas(self) -> list[str]:
        return [c["delta"].get("content") or "" for p in self.payloads() if isinstance(p, dict) for c in p["choices"]]

    def tool_arguments(self, choice: int = 0, call: int = 0) -> str:
        return "".join(
            t["function"].get("arguments") or ""
            for p in self.payloads()
            if isinstance(p, dict)
            for c in p.get("choices") or []
            if c["index"] == choice
            for t in c["delta"].get("tool_calls") or []
            if t["index"] == call
        )

    def blocked(self) -> bool:
        return self.data.endswith(BLOCKED)


async def guard(
    chunks: list[bytes], rules: list[TextRule], endpoint: str = "chat/completions", pulled: list[int] | None = None
) -> Run:
    recorded: list[Finding] = []
    out = [
        chunk
        async for chunk in StreamGuard(endpoint, rules, recorded.append, lambda f: BLOCKED).run(source(chunks, pulled))
    ]
    return Run(out, recorded)


# ---------------------------------------------------------------- block


async def test_a_term_split_across_two_chunks_is_blocked_and_nothing_after_it_is_forwarded() -> None:
    stream = chat_stream(["The sec", "ret is", " out"])
    pulled: list[int] = []
    run = await guard(per_event(stream), [rule("block", "secret")], pulled=pulled)
    assert run.blocked()
    assert run.chat_text() == "The sec"
    assert b"ret" not in run.data
    assert b"out" not in run.data and b"[DONE]" not in run.data
    assert [f.rule.rule for f in run.recorded] == ["block-secret"]
    assert pulled == [0, 1], "the source is not read past the offending event"


async def test_a_term_split_across_three_chunks_is_blocked() -> None:
    run = await guard(per_event(chat_stream(["a se", "cr", "et b", "c"])), [rule("block", "secret")])
    assert run.blocked()
    assert run.chat_text() == "a secr"
    assert b"et b" not in run.data


async def test_blocked_event_is_the_engines_error_event_and_the_generator_ends_cleanly() -> None:
    stream = chat_stream(["forbidden", " more"])
    engine_event = stream_error_event("Blocked by policy", "content_blocked")
    recorded: list[Finding] = []
    guard_ = StreamGuard("chat/completions", [rule("block", "forbidden")], recorded.append, lambda f: engine_event)
    run = guard_.run(source(per_event(stream)))
    out = [chunk async for chunk in run]
    assert out[-1] == engine_event
    assert b"forbidden" not in b"".join(out)
    with pytest.raises(StopAsyncIteration):
        await run.__anext__()


async def test_block_beats_redact_in_the_same_delta() -> None:
    rules = [rule("redact", "alpha"), rule("block", "omega")]
    run = await guard(per_event(chat_stream(["x alpha omega y"])), rules)
    assert run.blocked()
    assert b"alpha" not in run.data and b"omega" not in run.data


async def test_a_clean_stream_under_block_rules_is_forwarded_byte_identical() -> None:
    stream = chat_stream(["Nothing ", "to see ", "here"])
    run = await guard(cut(stream, range(0, len(stream), 13)), [rule("block", "secret"), rule("warn", "xyz")])
    assert run.data == stream
    assert run.recorded == []


# ---------------------------------------------------------------- tentative findings (a hit at the text's end)


CHUNKINGS = [per_event, bytewise, lambda data: [data]]


@pytest.mark.parametrize("chunking", CHUNKINGS)
async def test_a_term_the_next_delta_extends_into_a_longer_word_is_not_blocked(chunking: Any) -> None:
    stream = chat_stream(["class", "ification"])
    run = await guard(chunking(stream), [word("block", "class")])
    assert not run.blocked()
    assert run.data == stream
    assert run.recorded == []


async def test_the_event_with_a_tentative_finding_goes_out_unchanged_with_the_event_that_settles_it() -> None:
    events = per_event(chat_stream(["class", "ification", " here"]))
    run = await guard(events, [word("block", "class")])
    assert run.out == [events[0] + events[1], *events[2:]], "held, then sent in the chunk of the next delta"


@pytest.mark.parametrize("chunking", CHUNKINGS)
async def test_a_term_the_next_delta_confirms_is_blocked_and_its_event_never_sent(chunking: Any) -> None:
    stream = chat_stream(["The class", " is", " full"])
    pulled: list[int] = []
    run = await guard(chunking(stream), [word("block", "class")], pulled=pulled)
    assert run.blocked()
    assert b"class" not in run.data
    assert run.chat_text() == ""
    assert [(f.rule.rule, f.hit.start, f.hit.end) for f in run.recorded] == [("block-class", 4, 9)]
    if chunking is per_event:
        assert pulled == [0, 1], "blocked at the event that confirmed it"


def ending_with(ending: str) -> bytes:
    """A chat stream whose last delta is "the class", ended by a finish chunk, [DONE] alone, or nothing."""
    stream = chat_stream(["the", " class"], usage=False)
    if ending == "[DONE]":
        return b"".join(per_event(stream)[:2]) + wire.SSE_DONE
    if ending == "source end":
        return b"".join(per_event(stream)[:2])
    if ending == "unterminated":
        return b"".join(per_event(stream)[:2]).removesuffix(b"\n\n")
    return stream


@pytest.mark.parametrize("ending", ["finish_reason", "[DONE]", "source end", "unterminated"])
@pytest.mark.parametrize("chunking", CHUNKINGS)
async def test_a_term_at_the_very_end_of_the_text_is_blocked(ending: str, chunking: Any) -> None:
    run = await guard(chunking(ending_with(ending)), [word("block", "class")])
    assert run.blocked()
    assert b"class" not in run.data
    assert run.chat_text() == "the"


async def test_a_tentative_finding_ends_with_its_choice() -> None:
    events = [
        chunk_event(0, {"role": "assistant", "content": "my class"}),
        chunk_event(1, {"role": "assistant", "content": "other"}),
        chunk_event(0, {}, "stop"),
    ]
    run = await guard([sse(e) for e in events] + [wire.SSE_DONE], [word("block", "class")])
    assert run.blocked()
    assert run.data == BLOCKED, "choice 1's event came after the held one: not sent either"


async def test_events_of_other_keys_and_without_text_queue_behind_a_held_event_in_order() -> None:
    events = [
        sse(chunk_event(0, {"role": "assistant", "content": "the class"})),
        sse(chunk_event(1, {"role": "assistant", "content": "a class"})),
        b": keep-alive\n\n",
        sse(chunk_event(1, {"content": "ic"})),
        sse(chunk_event(0, {"content": "ical"})),
        sse(chunk_event(0, {"content": " music"})),
    ]
    stream = b"".join(events) + wire.SSE_DONE
    run = await guard([*events, wire.SSE_DONE], [word("block", "class")])
    assert run.data == stream
    assert run.out == [b"".join(events[:5]), events[5], wire.SSE_DONE], "released when no key is unsure"
    assert run.recorded == []
    blocked = await guard(bytewise(stream.replace(b'"ic"', b'" act"')), [word("block", "class")])
    assert blocked.blocked()
    assert blocked.data == BLOCKED


async def test_a_warning_is_recorded_only_when_confirmed() -> None:
    recorded: list[Finding] = []
    seen: list[int] = []

    async def watched(chunks: list[bytes]) -> AsyncIterator[bytes]:
        for chunk in chunks:
            seen.append(len(recorded))
            yield chunk

    stream = chat_stream(["class", "ification and class", " again"])
    guard_ = StreamGuard("chat/completions", [word("warn", "class")], recorded.append, lambda f: BLOCKED)
    out = [chunk async for chunk in guard_.run(watched(per_event(stream)))]
    assert b"".join(out) == stream
    assert [(f.hit.start, f.hit.end) for f in recorded] == [(19, 24)]
    assert seen[:4] == [0, 0, 0, 1], "recorded when ' again' confirmed it, not when 'class' arrived"

    at_end = await guard(per_event(chat_stream(["a class"])), [word("warn", "class"), word("shadow", "a")])
    assert [f.rule.rule for f in at_end.recorded] == ["shadow-a", "warn-class"], "confirmed by the finish chunk"
    extended = await guard(per_event(chat_stream(["class", "ification"])), [word("warn", "class")])
    assert extended.recorded == []


async def test_with_a_redact_rule_tentative_text_is_held_back_and_events_flow() -> None:
    events = per_event(chat_stream(["the class", "ification", " and class", " is"]))
    redacted = await guard(events, [word("redact", "class")])
    assert redacted.chat_text() == "the classification and [REDACTED] is"
    assert [f.hit.start for f in redacted.recorded] == [23]
    assert len(redacted.out) == len(events), "nothing held as events: one piece per network chunk"

    blocked = await guard(events, [word("block", "class"), word("redact", "zzz")])
    assert blocked.blocked()
    assert "the classification and class is".startswith(blocked.chat_text())
    assert blocked.chat_text().startswith("the classification"), "text before the term was released"
    assert "and class" not in blocked.chat_text()


async def test_with_a_redact_rule_a_term_at_the_very_end_is_confirmed() -> None:
    for ending in ("finish_reason", "[DONE]", "source end", "unterminated"):
        run = await guard(bytewise(ending_with(ending)), [word("redact", "class")])
        assert run.chat_text() == "the [REDACTED]", ending
        blocked = await guard(bytewise(ending_with(ending)), [word("block", "class"), word("redact", "zzz")])
        assert blocked.blocked(), ending
        assert b"class" not in blocked.data


async def test_responses_stream_tentative_findings() -> None:
    extended = responses_stream("a class ification-free classification")
    run = await guard(per_event(extended), [word("block", "classification-free")], "responses")
    assert not run.blocked()
    assert run.data == extended
    blocked = await guard(per_event(responses_stream("the class")), [word("block", "class")], "responses")
    assert blocked.blocked(), "the output_text.done event ends the key"
    assert b"class" not in blocked.data


async def test_fast_path_forwards_each_network_chunk_when_nothing_is_tentative() -> None:
    chunks = per_event(chat_stream(["A classic", " case", " of", " classes", "."]))
    run = await guard(chunks, [word("block", "class"), word("warn", "secret")])
    assert run.out == chunks
    assert run.recorded == []


# ---------------------------------------------------------------- chunking


async def test_sse_event_boundaries_split_across_network_chunks() -> None:
    stream = chat_stream(["Hello", " wor", "ld sec", "ret"])
    whole = await guard([stream], [rule("block", "secret")])
    for size in (1, 2, 3, 5, 17, 64):
        split = await guard(cut(stream, range(0, len(stream), size)), [rule("block", "secret")])
        assert split.data == whole.data
        assert split.chat_text() == "Hello world sec"


async def test_utf8_characters_split_across_network_chunks() -> None:
    stream = chat_stream(["Café ☕ geh", "€im 日本"])
    run = await guard(bytewise(stream), [rule("block", "h€i")])
    assert run.blocked()
    assert run.chat_text() == "Café ☕ geh"
    clean = await guard(bytewise(stream), [rule("block", "nothing")])
    assert clean.data == stream


async def test_crlf_framed_events_are_understood() -> None:
    stream = chat_stream(["my sec", "ret"]).replace(b"\n\n", b"\r\n\r\n")
    run = await guard(bytewise(stream), [rule("redact", "secret")])
    assert run.chat_text() == "my [REDACTED]"
    assert b"\r\n\r\n" in run.data and b"\n\n" not in run.data.replace(b"\r\n\r\n", b"")


async def test_event_and_comment_lines_pass_through_and_stay_with_their_event() -> None:
    payload = chunk_event(0, {"content": "top secret"})
    stream = b": keep-alive\n\nevent: chunk\nid: 7\ndata: " + orjson.dumps(payload) + b"\n\ndata: [DONE]\n\n"
    run = await guard(bytewise(stream), [rule("redact", "secret")])
    assert run.data.startswith(b": keep-alive\n\nevent: chunk\nid: 7\ndata: ")
    assert run.chat_text() == "top [REDACTED]"
    assert run.data.endswith(b"data: [DONE]\n\n")


# ---------------------------------------------------------------- redact


async def test_redaction_of_a_term_split_across_chunks_gives_exactly_the_redacted_text() -> None:
    deltas = ["Your pass", "word is se", "c", "ret", "; keep the secret", " safe"]
    stream = chat_stream(deltas)
    text = "".join(deltas)
    run = await guard(bytewise(stream), [rule("redact", "secret")])
    assert run.chat_text() == text.replace("secret", "[REDACTED]")
    assert all("sec" not in d and "ret" not in d for d in run.chat_deltas())
    assert [f.rule.rule for f in run.recorded] == ["redact-secret"]
    assert run.payloads()[-1] == "[DONE]"


async def test_held_back_text_is_flushed_before_the_finish_chunk() -> None:
    run = await guard(per_event(chat_stream(["abc", "defgh"], usage=False)), [rule("redact", "zzzzzz")])
    payloads = run.payloads()
    finish = next(i for i, p in enumerate(payloads) if isinstance(p, dict) and p["choices"][0]["finish_reason"])
    assert run.chat_text() == "abcdefgh"
    assert payloads[finish - 1]["choices"][0]["delta"] == {"content": "defgh"[-5:]}
    assert payloads[finish]["choices"][0]["delta"] == {}


async def test_held_back_text_is_flushed_at_the_end_of_a_stream_cut_short() -> None:
    stream = b"".join(sse(chunk_event(0, {"content": piece})) for piece in ["one ", "secret", " two"])
    run = await guard(per_event(stream), [rule("redact", "secret")])
    assert run.chat_text() == "one [REDACTED] two"


async def test_events_without_text_are_forwarded_byte_identical_while_redacting() -> None:
    stream = chat_stream(["a secret"], usage=True).replace(b"data: [DONE]", b": ping\n\ndata: [DONE]")
    run = await guard(bytewise(stream), [rule("redact", "secret")])
    sent, original = per_event(run.data), per_event(stream)
    assert sent[0] != original[0], "the chunk with the text was rewritten"
    assert sent[-4:] == original[-4:], "finish chunk, usage chunk, comment and [DONE] untouched"
    assert run.chat_text() == "a [REDACTED]"


async def test_two_redact_rules_with_overlapping_matches_merge_like_apply() -> None:
    rules = [rule("redact", "secret", "[A]"), rule("redact", "cretin", "[B]")]
    deltas = ["a sec", "retin", "o and a cret", "in"]
    run = await guard(bytewise(chat_stream(deltas)), rules)
    assert run.chat_text() == apply(rules, "".join(deltas))[0] == "a [A]o and a [B]"


# ---------------------------------------------------------------- choices, tools, completions, responses


async def test_choices_are_separate_streams() -> None:
    events = [
        chunk_event(0, {"role": "assistant", "content": "x sec"}),
        chunk_event(1, {"role": "assistant", "content": "ret y"}),
        chunk_event(1, {"content": " se"}),
        chunk_event(0, {"content": "ond"}),
        chunk_event(0, {}, "stop"),
        chunk_event(1, {"content": "cret"}, "stop"),
    ]
    stream = b"".join(sse(e) for e in events) + wire.SSE_DONE
    warned = await guard(bytewise(stream), [rule("warn", "secret")])
    assert [f.hit.start for f in warned.recorded] == [6], "in choice 1's 'ret y secret', the only match"
    redacted = await guard(bytewise(stream), [rule("redact", "secret")])
    assert redacted.chat_text(0) == "x second"
    assert redacted.chat_text(1) == "ret y [REDACTED]"


async def test_tool_call_argument_deltas_are_checked_and_redacted() -> None:
    deltas = wire.tool_deltas("lookup", "call_1", '{"token": "sk-secret-value", "n": 1}')
    stream = b"".join(wire.chat_chunks(HEAD, deltas, "tool_calls", None))
    run = await guard(bytewise(stream), [rule("redact", "secret-value")])
    assert run.tool_arguments() == '{"token": "sk-[REDACTED]", "n": 1}'
    assert b"secret" not in run.data
    blocked = await guard(per_event(stream), [rule("block", "secret-value")])
    assert blocked.blocked()
    assert blocked.tool_arguments() == '{"token":'


async def test_completions_stream_flushes_into_the_chunk_that_finishes() -> None:
    stream = b"".join(wire.completion_chunks(HEAD, "the secret is out secret", "stop", wire.chat_usage(1, 2)))
    run = await guard(bytewise(stream), [rule("redact", "secret")], "completions")
    texts = [c["text"] for p in run.payloads() if isinstance(p, dict) for c in p["choices"]]
    assert "".join(texts) == "the [REDACTED] is out [REDACTED]"
    finishing = [p for p in run.payloads() if isinstance(p, dict) and p["choices"] and p["choices"][0]["finish_reason"]]
    assert len(finishing) == 1 and finishing[0]["choices"][0]["text"].endswith("[REDACTED]")


def responses_stream(text: str) -> bytes:
    usage = wire.responses_usage(1, 2)
    return b"".join(wire.response_events({"model": "gpt-4o-mini"}, RESPONSE_HEAD, "msg_1", text, usage))


async def test_responses_stream_is_redacted_in_deltas_and_in_every_done_event() -> None:
    text = "The secret of secretive people"
    run = await guard(bytewise(responses_stream(text)), [rule("redact", "secret")], "responses")
    payloads = run.payloads()
    redacted = "The [REDACTED] of [REDACTED]ive people"
    deltas = [p["delta"] for p in payloads if p["type"] == "response.output_text.delta"]
    assert "".join(deltas) == redacted
    by_type = {p["type"]: p for p in payloads}
    assert by_type["response.output_text.done"]["text"] == redacted
    assert by_type["response.content_part.done"]["part"]["text"] == redacted
    assert by_type["response.output_item.done"]["item"]["content"][0]["text"] == redacted
    assert by_type["response.completed"]["response"]["output"][0]["content"][0]["text"] == redacted
    assert b"secret" not in run.data
    assert [f.rule.rule for f in run.recorded] == ["redact-secret"]
    assert b"event: response.output_text.delta\ndata: " in run.data


async def test_responses_flush_event_comes_before_the_done_event_with_the_last_deltas_sequence_number() -> None:
    run = await guard(per_event(responses_stream("alpha beta")), [rule("redact", "zzzz")], "responses")
    payloads = run.payloads()
    kinds = [p["type"] for p in payloads]
    done = kinds.index("response.output_text.done")
    assert kinds[done - 1] == "response.output_text.delta"
    assert payloads[done - 1]["delta"] == "eta"
    assert payloads[done - 1]["sequence_number"] == payloads[done - 2]["sequence_number"]
    assert "".join(p["delta"] for p in payloads if p["type"] == "response.output_text.delta") == "alpha beta"


async def test_responses_stream_is_blocked() -> None:
    run = await guard(bytewise(responses_stream("I will tell the secret now")), [rule("block", "secret")], "responses")
    assert run.blocked()
    assert b"response.completed" not in run.data and b"secret" not in run.data


# ---------------------------------------------------------------- pass-through


async def test_done_and_usage_chunks_pass_through_unchanged() -> None:
    stream = chat_stream(["hi"])
    run = await guard(per_event(stream), [rule("warn", "hi")])
    assert run.data == stream
    assert per_event(run.data)[-2:] == per_event(stream)[-2:]


async def test_warn_is_recorded_once_and_the_stream_is_unchanged() -> None:
    stream = chat_stream(["bad ", "word, ba", "d word, bad word"])
    run = await guard(bytewise(stream), [rule("warn", "bad word"), rule("shadow", "word")])
    assert run.data == stream
    assert [(f.rule.rule, f.hit.start) for f in run.recorded] == [("warn-bad word", 0), ("shadow-word", 4)]


@pytest.mark.parametrize(
    "event",
    [
        b"data: {not json\n\n",
        b"data: [1, 2, 3]\n\n",
        b'data: {"choices": "weird"}\n\n',
        b'data: {"choices": [{"index": "x", "delta": {"content": 5}}]}\n\n',
        b"data: \xff\xfe secret\n\n",
        b": comment with secret\n\n",
        b"event: ping\n\n",
        b"retry: 100\n\n",
    ],
)
async def test_malformed_events_pass_through(event: bytes) -> None:
    stream = chat_stream(["one"]).replace(b"data: [DONE]", event.rstrip(b"\n") + b"\n\ndata: [DONE]")
    for rules in ([rule("block", "secret")], [rule("redact", "secret")]):
        run = await guard(bytewise(stream), rules)
        assert event in run.data
        assert not run.blocked()


async def test_an_unterminated_last_event_is_still_checked() -> None:
    stream = sse(chunk_event(0, {"content": "safe "})) + b"data: " + orjson.dumps(chunk_event(0, {"content": "secret"}))
    blocked = await guard(bytewise(stream), [rule("block", "secret")])
    assert blocked.blocked()
    redacted = await guard(bytewise(stream), [rule("redact", "secret")])
    assert redacted.chat_text() == "safe [REDACTED]"


async def test_no_rules_forwards_the_chunks_themselves() -> None:
    chunks = cut(chat_stream(["a", "b"]), [5, 9, 40])
    run = await guard(chunks, [])
    assert run.out == chunks


# ---------------------------------------------------------------- whole answers


def chat_body(content: str) -> bytes:
    message = wire.chat_message(content, None, "call_1", "")
    return wire.chat_completion(HEAD, message, "stop", wire.chat_usage(1, 2))


def test_scan_json_redacts_and_records_once_per_rule() -> None:
    recorded: list[Finding] = []
    body, block = scan_json(
        "chat/completions", chat_body("a secret and a secret"), [rule("redact", "secret")], recorded.append
    )
    assert block is None
    assert orjson.loads(body)["choices"][0]["message"]["content"] == "a [REDACTED] and a [REDACTED]"
    assert len(recorded) == 1


def test_scan_json_returns_the_strictest_block_finding() -> None:
    recorded: list[Finding] = []
    rules = [rule("warn", "a"), rule("block", "secret"), rule("block", "and")]
    original = chat_body("a secret and more")
    body, block = scan_json("chat/completions", original, rules, recorded.append)
    assert block is not None and block.rule.rule == "block-secret"
    assert body == original
    assert [f.rule.rule for f in recorded] == ["warn-a", "block-secret", "block-and"]


def test_scan_json_keeps_the_original_bytes_when_nothing_is_redacted() -> None:
    original = chat_body("all fine").replace(b",", b", ")
    recorded: list[Finding] = []
    assert scan_json("chat/completions", original, [rule("warn", "fine")], recorded.append) == (original, None)
    assert len(recorded) == 1


def test_scan_json_passes_unparseable_bodies() -> None:
    recorded: list[Finding] = []
    assert scan_json("chat/completions", b"{oops secret", [rule("block", "secret")], recorded.append) == (
        b"{oops secret",
        None,
    )
    assert recorded == []


def test_scan_json_responses_answer() -> None:
    body = wire.response_object({}, RESPONSE_HEAD, [wire.output_message("msg_1", "the secret")], None, "completed")
    recorded: list[Finding] = []
    out, block = scan_json("responses", orjson.dumps(body), [rule("redact", "secret")], recorded.append)
    assert block is None
    assert orjson.loads(out)["output"][0]["content"][0]["text"] == "the [REDACTED]"


# ---------------------------------------------------------------- properties

# Text from a small alphabet (with multi-byte characters) so the terms occur by chance as well as on purpose.
ALPHABET = "sécr☕t xe"
TERMS = ("sécr☕t", "x☕e")  # border-free: no proper prefix is also a suffix, so no two matches of one term overlap


@st.composite
def streamed_text(draw: st.DrawFn) -> tuple[str, list[str], list[int]]:
    """A text (maybe with a term placed in it), its split into deltas, and cut points of the SSE bytes."""
    text = draw(st.text(ALPHABET, max_size=40))
    if draw(st.booleans()):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(TERMS)) + text[at:]
    splits = draw(st.lists(st.integers(0, len(text)), max_size=12))
    points = [0, *sorted(set(splits)), len(text)]
    deltas = [text[a:b] for a, b in itertools.pairwise(points) if b > a]
    size = len(chat_stream(deltas))
    cuts = draw(st.lists(st.integers(1, max(size - 1, 1)), max_size=30))
    return text, deltas, cuts


PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def whole_words(text: str) -> set[tuple[int, int]]:
    """Where the TERMS occur in `text` as whole words (no letter or digit on either side): the oracle."""
    return {m.span() for term in TERMS for m in re.finditer(rf"(?<!\w){re.escape(term)}(?!\w)", text)}


@PROPERTY
@given(streamed_text(), st.booleans())
async def test_blocking_catches_a_term_iff_the_text_contains_it_as_a_whole_word(
    case: tuple[str, list[str], list[int]], redacting: bool
) -> None:
    """Exact, with or without a redact rule (events held back, or text held back): the block happens iff
    the whole text has a whole-word term, and the client's text stops before the end of the first one."""
    text, deltas, cuts = case
    stream = chat_stream(deltas)
    rules = [word("block", term) for term in TERMS] + ([rule("redact", "zz")] if redacting else [])
    run = await guard(cut(stream, cuts), rules)
    found = whole_words(text)
    assert run.blocked() == bool(found)
    assert text.startswith(run.chat_text())
    assert {(f.hit.start, f.hit.end) for f in run.recorded} <= found
    if found:
        assert len(run.chat_text()) < min(end for _, end in found), "the client never gets a blocked term whole"
        assert b"[DONE]" not in run.data
    elif redacting:
        assert run.chat_text() == text
    else:
        assert run.data == stream


@PROPERTY
@pytest.mark.parametrize("make", [rule, word])
@given(case=streamed_text())
async def test_streamed_redaction_equals_redacting_the_whole_text(
    make: Any, case: tuple[str, list[str], list[int]]
) -> None:
    """The exact property: for checks whose matches are local (a check finds a match in any piece of text
    that contains it with its window of context, and finds nothing a scan of the whole text would not), the
    client's concatenated deltas are exactly base.apply on the whole text, and no single delta shows a
    match. Literal terms that cannot overlap themselves are local, as whole words too (a match at the end of
    the text so far is tentative until the next text shows whether a letter follows); two such rules may
    still overlap each other (the spans merge)."""
    text, deltas, cuts = case
    rules = [make("redact", TERMS[0], "[A]"), make("redact", TERMS[1], "[B]"), make("warn", "s")]
    run = await guard(cut(chat_stream(deltas), cuts), rules)
    expected, findings = apply(rules, text)
    assert run.chat_text() == expected
    if make is rule:
        assert not any(term in delta for delta in run.chat_deltas() for term in TERMS)
    assert {f.rule.rule for f in run.recorded} == {f.rule.rule for f in findings}
    assert run.payloads()[-1] == "[DONE]"


@settings(max_examples=100, deadline=None)
@given(streamed_text())
async def test_responses_redaction_equals_redacting_the_whole_text(case: tuple[str, list[str], list[int]]) -> None:
    text, _, cuts = case
    rules = [rule("redact", term) for term in TERMS]
    stream = responses_stream(text)
    run = await guard(cut(stream, [c * len(stream) // 2000 for c in cuts]), rules, "responses")
    expected = apply(rules, text)[0]
    payloads = run.payloads()
    assert "".join(p["delta"] for p in payloads if p["type"] == "response.output_text.delta") == expected
    done = next(p for p in payloads if p["type"] == "response.output_text.done")
    assert done["text"] == expected


# ---------------------------------------------------------------- log probabilities spell out the original tokens


def with_logprobs(event: dict[str, Any], token: str) -> dict[str, Any]:
    logprobs = {"content": [{"token": token, "logprob": -0.1, "bytes": list(token.encode()), "top_logprobs": []}]}
    event["choices"][0]["logprobs"] = logprobs
    return event


async def test_redacting_drops_logprobs_from_events_with_text() -> None:
    events = [with_logprobs(chunk_event(0, {"content": t}), t) for t in ["my sec", "ret", " ok"]]
    stream = b"".join(sse(e) for e in events) + sse(chunk_event(0, {}, "stop")) + wire.SSE_DONE
    run = await guard(per_event(stream), [rule("redact", "secret")])
    assert run.chat_text() == "my [REDACTED] ok"
    assert b"sec" not in run.data and b"ret" not in run.data
    assert all(c["logprobs"] is None for p in run.payloads() if isinstance(p, dict) for c in p["choices"])
    kept = await guard(per_event(stream), [rule("block", "nothing")])
    assert kept.data == stream, "without a redact rule logprobs stay"


def test_scan_json_drops_logprobs_only_when_it_redacts() -> None:
    body = orjson.loads(chat_body("a secret"))
    body["choices"][0]["logprobs"] = {"content": [{"token": "secret", "logprob": -1.0, "top_logprobs": []}]}
    recorded: list[Finding] = []
    out, _ = scan_json("chat/completions", orjson.dumps(body), [rule("redact", "secret")], recorded.append)
    assert orjson.loads(out)["choices"][0]["logprobs"] is None
    same, _ = scan_json("chat/completions", orjson.dumps(body), [rule("warn", "secret")], recorded.append)
    assert same == orjson.dumps(body)


# ---------------------------------------------------------------- more shapes


async def test_events_before_the_offending_one_in_the_same_network_chunk_are_forwarded() -> None:
    stream = chat_stream(["fine ", "words ", "then secret", " and more"])
    run = await guard([stream], [rule("block", "secret")])
    assert run.blocked()
    assert run.chat_text() == "fine words "


async def test_two_choices_in_one_event_are_kept_apart() -> None:
    def both(first: str, second: str) -> bytes:
        event = chunk_event(0, {"content": first})
        event["choices"].append({"index": 1, "delta": {"content": second}, "logprobs": None, "finish_reason": None})
        return sse(event)

    stream = both("x se", "y cr") + both("cret", "et") + wire.SSE_DONE
    run = await guard(bytewise(stream), [rule("redact", "secret")])
    assert run.chat_text(0) == "x [REDACTED]"
    assert run.chat_text(1) == "y cret"


async def test_chat_refusal_deltas_are_checked() -> None:
    events = [
        chunk_event(0, {"role": "assistant", "refusal": "I can't share the sec"}),
        chunk_event(0, {"refusal": "ret"}),
    ]
    stream = b"".join(sse(e) for e in events) + sse(chunk_event(0, {}, "stop")) + wire.SSE_DONE
    run = await guard(per_event(stream), [rule("redact", "secret")])
    assert run.chat_text(field="refusal") == "I can't share the [REDACTED]"
    assert b"secret" not in run.data


async def test_responses_function_call_arguments_are_redacted_in_deltas_and_done_events() -> None:
    item = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f", "arguments": ""}
    arguments = '{"key": "secret"}'
    events = [
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        *(
            {"type": "response.function_call_arguments.delta", "item_id": "fc_1", "output_index": 0, "delta": piece}
            for piece in ['{"key": "se', "cr", 'et"}']
        ),
        {"type": "response.function_call_arguments.done", "item_id": "fc_1", "output_index": 0, "arguments": arguments},
        {"type": "response.output_item.done", "output_index": 0, "item": {**item, "arguments": arguments}},
    ]
    stream = b"".join(wire.sse_event({**e, "sequence_number": n}) for n, e in enumerate(events))
    run = await guard(bytewise(stream), [rule("redact", "secret")], "responses")
    payloads = run.payloads()
    redacted = '{"key": "[REDACTED]"}'
    assert "".join(p["delta"] for p in payloads if p["type"].endswith("arguments.delta")) == redacted
    assert payloads[-2]["arguments"] == payloads[-1]["item"]["arguments"] == redacted
    assert b"secret" not in run.data
