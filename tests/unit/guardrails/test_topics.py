"""Restricted topics: keyword sets found like denied terms, a topic counting once it has enough hits."""

import time

import pytest

from gateway.guardrails import text
from gateway.guardrails.base import Hit
from gateway.guardrails.topics import Topics

TOPICS = {
    "weapons": ["rifle", "ammunition", "silencer"],
    "medical": ["diagnosis", "prescription", "处方"],
}


def found(check: Topics, value: str) -> list[tuple[str, str]]:
    return [(value[hit.start : hit.end], hit.label) for hit in check.scan(value)]


def test_a_keyword_of_a_topic_is_a_hit_labelled_with_the_topic() -> None:
    assert found(Topics(TOPICS), "Where can I buy a RIFLE?") == [("RIFLE", "topic weapons")]


def test_hits_of_several_topics_come_in_text_order() -> None:
    value = "my prescription and my rifle, and 这个处方"
    assert found(Topics(TOPICS), value) == [
        ("prescription", "topic medical"),
        ("rifle", "topic weapons"),
        ("处方", "topic medical"),
    ]


def test_a_topic_needs_min_hits_keyword_occurrences() -> None:
    topics = Topics(TOPICS, min_hits=2)
    assert topics.scan("a rifle") == []
    assert found(topics, "a rifle and ammunition") == [("rifle", "topic weapons"), ("ammunition", "topic weapons")]
    assert found(topics, "rifle, rifle") == [("rifle", "topic weapons"), ("rifle", "topic weapons")]
    assert topics.scan("a rifle and a diagnosis") == []  # one hit in each topic is not two in one


def test_keywords_match_as_terms_do() -> None:
    topics = Topics({"weapons": ["rifle"]})
    assert topics.scan("rifleman riflescope") == []
    assert found(topics, "RIFLE") == [("RIFLE", "topic weapons")]


@pytest.mark.parametrize(
    ("topics", "message"),
    [
        ({}, "no topics"),
        ({"weapons": []}, "topic 'weapons' has no keywords"),
        ({"weapons": ["rifle", " "]}, "topic 'weapons': term 2 .* is empty"),
        ({"weapons": "rifle"}, "topic 'weapons': keywords must be a list"),
        ({"": ["rifle"]}, "topic name '' is empty"),
    ],
)
def test_bad_topics_are_refused_naming_the_topic(topics: dict[str, list[str]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Topics(topics)


@pytest.mark.parametrize("min_hits", [0, -1, 1.5, True])
def test_min_hits_must_be_a_whole_number_of_at_least_one(min_hits: int) -> None:
    with pytest.raises(ValueError, match="min_hits"):
        Topics(TOPICS, min_hits=min_hits)


def test_the_window_covers_the_longest_keyword() -> None:
    assert Topics(TOPICS).window >= len("prescription")


def test_a_scan_out_of_time_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(text, "TIMEOUT", 0.0)
    monkeypatch.setattr(text, "TIMEOUT_PER_CHAR", 0.0)
    assert Topics(TOPICS).scan("hello") == [Hit(0, 5, "topic weapons timed out")]


@pytest.mark.parametrize("value", ["a" * 100_000, "rifle" * 20_000, "rifle " * 16_000, "处方" * 50_000])
def test_adversarial_input_is_scanned_in_bounded_time(value: str) -> None:
    started = time.perf_counter()
    Topics(TOPICS).scan(value)
    assert time.perf_counter() - started < 1.0
