"""Masking what the model produced (a pii rule with `output: mask`), with the real analyzer (Presidio, pattern
recognizers, one pool process): JSON answers and streams, values split across deltas, pseudonyms of the
request still restored (never masked), hashing, the held-back window, and the analyzer failing both ways."""

import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Any

import orjson
import pytest

from gateway.pii.engine import PiiEngine
from gateway.pii.output import MIN_RELEASE, OutputMasker, mask_answer
from gateway.pii.restore import StreamRestorer, restore_json
from gateway.pii.vault import Vault
from gateway.pipeline import RequestContext, Result

MADE_UP = "bob.smith@example.org"
SENT = "alice.martin@example.com"
PHONE = "+1 415-555-0132"
IP = "203.0.113.42"
WINDOW = 48


def masker(engine: PiiEngine, fail_open: bool = False) -> OutputMasker:
    actions: dict[str, Any] = {"EMAIL_ADDRESS": "mask", "PHONE_NUMBER": "mask", "IP_ADDRESS": "hash"}
    return OutputMasker(engine, actions, 0.35, b"salt", WINDOW, fail_open)


def vault_with_sent() -> tuple[Vault, str]:
    vault = Vault()
    return vault, vault.placeholder("EMAIL_ADDRESS", SENT)


def chat_answer(text: str) -> bytes:
    message = {"role": "assistant", "content": text}
    logprobs = {"content": [{"token": "x", "logprob": -0.1, "bytes": None, "top_logprobs": []}]}
    return orjson.dumps(
        {"id": "c", "object": "chat.completion", "choices": [{"index": 0, "message": message, "logprobs": logprobs}]}
    )


async def test_a_json_answer_has_made_up_values_masked_and_the_senders_value_restored(engine: PiiEngine) -> None:
    vault, placeholder = vault_with_sent()
    the_masker = masker(engine)
    body = chat_answer(f"I wrote to {placeholder} and cc'd {MADE_UP}; call {PHONE}. Server {IP}.")
    masked = await mask_answer("chat/completions", body, the_masker)
    out = orjson.loads(restore_json("chat/completions", masked, vault))
    text = out["choices"][0]["message"]["content"]
    assert SENT in text and MADE_UP not in text and PHONE not in text and IP not in text
    assert text.count("<EMAIL_ADDRESS>") == 1 and "<PHONE_NUMBER>" in text and "<IP_ADDRESS:" in text
    assert out["choices"][0]["logprobs"] is None  # they would spell the masked tokens
    counts = {(item["entity"], item["action"]): item["count"] for item in the_masker.audit_items()}
    assert counts == {
        ("EMAIL_ADDRESS", "output_mask"): 1,
        ("PHONE_NUMBER", "output_mask"): 1,
        ("IP_ADDRESS", "output_hash"): 1,
    }


async def test_a_json_answer_without_personal_data_is_the_same_bytes(engine: PiiEngine) -> None:
    body = chat_answer("Nothing personal here, only 42 apples and 7 pears.")
    assert await mask_answer("chat/completions", body, masker(engine)) is body


# ---------------------------------------------------------------- streams


def sse(deltas: Iterable[str]) -> list[bytes]:
    events = [{"id": "c", "choices": [{"index": 0, "delta": {"content": d}, "finish_reason": None}]} for d in deltas]
    events.append({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return [b"data: " + orjson.dumps(e) + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]


async def source(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def contents(pieces: list[bytes]) -> list[str]:
    """The content delta of every chat event the client got, in order."""
    out = []
    for event in b"".join(pieces).split(b"\n\n"):
        if event.startswith(b"data: {"):
            payload = orjson.loads(event[6:])
            if "error" in payload:
                out.append("ERROR:" + payload["error"]["code"])
            for choice in payload.get("choices", []):
                if choice["delta"].get("content"):
                    out.append(choice["delta"]["content"])
    return out


async def streamed(restorer: StreamRestorer, deltas: Iterable[str]) -> list[bytes]:
    return [piece async for piece in restorer.run(source(sse(deltas)))]


async def test_a_stream_masks_a_value_split_into_single_characters(engine: PiiEngine) -> None:
    vault, placeholder = vault_with_sent()
    text = f"Sure. I wrote to {placeholder} and to {MADE_UP} as well, then I called {PHONE} twice. Done, all good."
    the_masker = masker(engine)
    out = contents(await streamed(StreamRestorer("chat/completions", vault, the_masker), list(text)))
    whole = "".join(out)
    assert whole == text.replace(placeholder, SENT).replace(MADE_UP, "<EMAIL_ADDRESS>").replace(PHONE, "<PHONE_NUMBER>")
    assert not any(part in piece for piece in out for part in ("bob", "smith", "555"))  # no piece of a value
    assert len(out) <= len(text) // MIN_RELEASE + 2  # released in pieces, not a character at a time


async def test_a_stream_holds_back_at_most_the_window(engine: PiiEngine) -> None:
    text = "word " * 40
    pieces = await streamed(
        StreamRestorer("chat/completions", Vault(), masker(engine)), [text[i : i + 5] for i in range(0, 200, 5)]
    )
    out = contents(pieces)
    assert "".join(out) == text
    released_before_end = sum(map(len, out[:-1]))
    assert released_before_end >= len(text) - WINDOW - MIN_RELEASE  # the rest of it went out while streaming


async def test_a_value_longer_than_a_delta_at_the_window_edge_is_never_split(engine: PiiEngine) -> None:
    filler = "x" * (WINDOW + 3)
    text = f"{filler} {MADE_UP} {filler} end"
    out = contents(
        await streamed(
            StreamRestorer("chat/completions", Vault(), masker(engine)),
            [text[i : i + 7] for i in range(0, len(text), 7)],
        )
    )
    assert "".join(out) == text.replace(MADE_UP, "<EMAIL_ADDRESS>")
    assert not any("example" in piece for piece in out)


async def test_the_analyzer_failing_ends_the_stream_with_an_error_or_passes_it_as_configured(
    engine: PiiEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    await engine.ensure_started()
    monkeypatch.setattr(engine, "timeout", 1e-9)  # every analysis now times out
    text = f"Write to {MADE_UP} please ({uuid.uuid4()}), and have a very nice day; see you tomorrow."  # not cached
    errors: list[Exception] = []

    def refused(exc: Exception) -> bytes:
        errors.append(exc)
        return b'data: {"error":{"message":"withheld","type":"x","code":"pii_unavailable"}}\n\n'

    closed = await streamed(StreamRestorer("chat/completions", Vault(), masker(engine), refused), [text])
    assert contents(closed) == ["ERROR:pii_unavailable"] and len(errors) == 1
    opened = StreamRestorer("chat/completions", Vault(), masker(engine, fail_open=True), refused)
    assert "".join(contents(await streamed(opened, [text]))) == text
    assert opened.unchecked is not None and len(errors) == 1


async def test_the_stage_withholds_a_json_answer_it_cannot_check(
    engine: PiiEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.errors import PiiUnavailable
    from gateway.pii import stage

    await engine.ensure_started()
    monkeypatch.setattr(engine, "timeout", 1e-9)
    monkeypatch.setattr(OutputMasker, "of", classmethod(lambda cls, *a: masker(engine)))
    ctx = RequestContext("r", "chat/completions", {}, b"{}", {}, "gk-x")
    ctx.result = Result(200, {}, chat_answer(f"mail {MADE_UP} ({uuid.uuid4()})"))
    with pytest.raises(PiiUnavailable):
        await stage.MaskAnswer(engine, b"salt", WINDOW)(ctx)
