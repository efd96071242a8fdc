"""The analyses cache: bounded, least recently used first out, keyed by what was asked as well as the text,
holding no text; and the engine answering a text it has seen without the pool."""

import pytest

from gateway.pii.cache import Findings
from gateway.pii.engine import PiiEngine
from gateway.pii.vault import Span

SPANS = (Span(0, 5, "EMAIL_ADDRESS"),)


def test_the_key_depends_on_the_text_the_entities_and_the_threshold() -> None:
    cache = Findings(8)
    base = cache.key("hello", ["EMAIL_ADDRESS"], 0.35)
    assert base == cache.key("hello", ["EMAIL_ADDRESS"], 0.35)
    others = {cache.key("hello!", ["EMAIL_ADDRESS"], 0.35), cache.key("hello", ["PERSON"], 0.35)}
    others.add(cache.key("hello", ["EMAIL_ADDRESS"], 0.5))
    assert base not in others and len(others) == 3
    assert Findings(8).key("hello", ["EMAIL_ADDRESS"], 0.35) != base  # a secret per cache


def test_it_keeps_at_most_its_entries_and_drops_the_least_recently_used() -> None:
    cache = Findings(2)
    a, b, c = (cache.key(t, [], 0.5) for t in "abc")
    cache.put(a, SPANS)
    cache.put(b, ())
    assert cache.get(a) == SPANS  # a is now the most recent
    cache.put(c, ())
    assert cache.get(b) is None and cache.get(a) == SPANS and cache.get(c) == ()
    assert cache.status() == {"entries": 2, "hits": 3, "misses": 1}


def test_zero_entries_turns_it_off() -> None:
    cache = Findings(0)
    key = cache.key("x", [], 0.5)
    cache.put(key, SPANS)
    assert cache.get(key) is None


async def test_the_engine_answers_a_text_it_has_seen_without_the_pool(
    engine: PiiEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = "Write to carol.jones@example.net about the 3 invoices."
    first = await engine.analyze([text], ["EMAIL_ADDRESS"], 0.35)
    assert [(s.entity, text[s.start : s.end]) for s in first[0]] == [("EMAIL_ADDRESS", "carol.jones@example.net")]
    monkeypatch.setattr(engine, "timeout", 1e-9)  # the pool can no longer answer in time
    again = await engine.analyze([text, text], ["EMAIL_ADDRESS"], 0.35)
    assert again == [first[0], first[0]]
