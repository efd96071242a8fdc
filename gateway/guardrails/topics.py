"""Restricted topics: a topic is a named set of keywords, found with `Terms`.

    Topics(topics, min_hits=1)      e.g. Topics({"weapons": ["rifle", "ammunition"], "medical": ["diagnosis"]})

A topic is hit when at least `min_hits` keyword occurrences of it are in the text (the same keyword twice
counts twice); `scan` then returns those occurrences, labelled "topic <name>". Keywords match like `Terms`:
case-insensitively with full case folding, at word boundaries except in scripts written without spaces.
A scan that runs out of time fails closed (one hit over the whole text, "topic <name> timed out").
"""

from collections.abc import Mapping, Sequence

from gateway.guardrails.base import Hit
from gateway.guardrails.text import Terms, deadline_for, timed_out


class Topics:
    """Restricted topics by keyword sets; each hit is labelled "topic <name>"."""

    def __init__(self, topics: Mapping[str, Sequence[str]], min_hits: int = 1) -> None:
        if not isinstance(topics, Mapping):
            raise ValueError("topics must be a mapping of topic names to keyword lists")
        if not topics:
            raise ValueError("no topics given")
        if isinstance(min_hits, bool) or not isinstance(min_hits, int) or min_hits < 1:
            raise ValueError(f"min_hits must be a whole number of at least 1, not {min_hits!r}")
        self._topics = [(name, _keywords(name, keywords)) for name, keywords in topics.items()]
        self._min_hits = min_hits
        self._window = max(terms.window for _, terms in self._topics)

    @property
    def window(self) -> int:
        return self._window

    def scan(self, text: str) -> list[Hit]:
        if not text:
            return []
        deadline = deadline_for(text)
        hits: list[Hit] = []
        for name, terms in self._topics:
            found = terms.find(text, deadline)
            if found is None:
                return timed_out(text, f"topic {name}")
            if len(found) >= self._min_hits:
                hits.extend(Hit(hit.start, hit.end, f"topic {name}") for hit in found)
        return sorted(hits, key=lambda hit: (hit.start, -hit.end))


def _keywords(name: str, keywords: Sequence[str]) -> Terms:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"topic name {name!r} is empty")
    if isinstance(keywords, str) or not isinstance(keywords, Sequence):
        raise ValueError(f"topic {name!r}: keywords must be a list of strings")
    if not keywords:
        raise ValueError(f"topic {name!r} has no keywords")
    try:
        return Terms(keywords)
    except ValueError as error:
        raise ValueError(f"topic {name!r}: {error}") from None
