"""Denied terms and regular expressions as text checks (the static safety check is in regex_safety).

    Terms(terms, word_boundary=True)          denied words and phrases, one compiled alternation
    Patterns(patterns, ignore_case=True)      policy regular expressions, checked for catastrophic backtracking
    compile_pattern(pattern, ignore_case)     how a policy regular expression is compiled for scanning
    check_pattern(pattern) -> str | None      what is wrong with a policy regular expression, if anything
    max_width(pattern) -> int | None          the longest text one match can span (None: unbounded)
    find_all(pattern, text, deadline)         every match of a compiled pattern, or None when out of time

Matching uses the `regex` module, for Unicode case folding and for its `timeout=`. Terms fold case fully
("STRASSE" matches "straße"); case-insensitive patterns fold fully when they contain a non-ASCII character
(see `compile_pattern`). Parameters are validated when the policy loads (ValueError naming the bad item);
`scan` never raises.

Bounded time: a pattern that can backtrack catastrophically is refused when the policy loads (see
`check_pattern`), and every scan also runs under a deadline of `TIMEOUT` seconds plus `TIMEOUT_PER_CHAR` per
character of text (so a legitimate 4 MB prompt is not cut off). A scan that runs out of time FAILS CLOSED: it
returns one hit spanning the whole text, labelled "... timed out", so the rule's action applies to the request.

Word boundaries in `Terms`: a term that starts or ends with a letter or digit only matches where the character
beyond that end is not a letter or digit ("class" is not found in "classification"), except in scripts written
without spaces between words (Han, Hiragana, Katakana, Thai, Lao, Khmer, Myanmar): a term ending in such a
character needs no boundary ("机密" is found in "这是机密文件"), and such a character next to a term counts as a
boundary ("secret" is found in "这是secret文件").
"""

import bisect
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import regex

from gateway.guardrails.base import Hit
from gateway.guardrails.regex_safety import FLAGS, check_pattern, max_width

__all__ = ["Patterns", "Terms", "check_pattern", "compile_pattern", "max_width"]

# A scan may take TIMEOUT seconds, plus TIMEOUT_PER_CHAR per character of the text scanned.
TIMEOUT = 0.05
TIMEOUT_PER_CHAR = 0.5e-6
# Simple case folding: what a case-insensitive pattern written in ASCII gets (see `compile_pattern`).
SIMPLE_FLAGS = regex.V0 | regex.IGNORECASE
# A bounded pattern wider than this gets the `window` argument instead (a bigger stream carry-over isn't worth it).
MAX_WINDOW = 65536
# One character of context on each side: what a boundary check or lookaround next to a match looks at.
CONTEXT = 2

_NO_SPACE_SCRIPTS = r"\p{scx=Han}\p{scx=Hiragana}\p{scx=Katakana}\p{scx=Thai}\p{scx=Lao}\p{scx=Khmer}\p{scx=Myanmar}"
_NO_SPACE_CHAR = regex.compile(f"[{_NO_SPACE_SCRIPTS}]")
_WORD_CHAR = regex.compile(r"\w")
# A letter or digit of a script written with spaces: what may not stand next to a term's word-character end.
_SPACED_WORD_CHAR = f"[^\\W{_NO_SPACE_SCRIPTS}]"
# The characters str.casefold() turns into more than one ("ß" -> "ss"; all in the BMP as of Unicode 15).
_LENGTHENED_BY_FOLDING = regex.compile(
    "[" + "".join(chr(c) for c in range(0x10000) if len(chr(c).casefold()) > 1) + "]"
)


def deadline_for(text: str) -> float:
    """The monotonic time by which a scan of `text` has to finish."""
    return time.monotonic() + TIMEOUT + TIMEOUT_PER_CHAR * len(text)


def find_all(pattern: Any, text: str, deadline: float) -> list[Any] | None:
    """Every non-empty match of the compiled `regex` pattern in `text`, or None if `deadline` passed first."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return None
    try:
        return [m for m in pattern.finditer(text, timeout=remaining) if m.end() > m.start()]
    except TimeoutError:
        return None


def timed_out(text: str, label: str) -> list[Hit]:
    """The fail-closed answer of a scan that ran out of time: one hit over the whole text."""
    return [Hit(0, len(text), f"{label} timed out")]


class Terms:
    """Denied terms: words or phrases matched case-insensitively (full case folding), labelled as written.

    Matching runs case-sensitively on `text.casefold()` with the case-folded terms: literal alternatives are
    several times faster that way than with the `regex` FULLCASE flag. Where folding lengthens a character
    ("ß" becomes "ss"), the offsets of a match are mapped back to the original text.
    """

    def __init__(self, terms: Sequence[str], word_boundary: bool = True) -> None:
        if isinstance(terms, str):
            raise ValueError("terms must be a list of strings, not one string")
        if not terms:
            raise ValueError("no terms given")
        by_fold: dict[str, str] = {}
        for position, term in enumerate(terms, 1):
            if not isinstance(term, str) or not term.strip():
                raise ValueError(f"term {position} ({term!r}) is empty: a term needs a non-space character")
            by_fold.setdefault(term.casefold(), term)
        self._by_fold = by_fold
        folds = sorted(by_fold, key=len, reverse=True)  # longest first: "top secret" wins over "secret"
        alternatives = "|".join(_term_pattern(fold, word_boundary) for fold in folds)
        self._pattern = regex.compile(alternatives, regex.V0 | regex.DOTALL)
        self._window = max(len(fold) for fold in by_fold) + CONTEXT

    @property
    def window(self) -> int:
        return self._window

    @property
    def terms(self) -> list[str]:
        """The distinct terms, as written in the policy."""
        return list(self._by_fold.values())

    def scan(self, text: str) -> list[Hit]:
        hits = self.find(text, deadline_for(text))
        return timed_out(text, "terms") if hits is None else hits

    def find(self, text: str, deadline: float) -> list[Hit] | None:
        """The hits in `text`, or None if `deadline` (monotonic time) passed first."""
        if not text:
            return []
        folded = _Folded.of(text)
        matches = find_all(self._pattern, folded.text, deadline)
        if matches is None:
            return None
        return [
            Hit(folded.original(m.start()), folded.original(m.end(), end=True), self._label(m.group())) for m in matches
        ]

    def _label(self, folded_match: str) -> str:
        return self._by_fold.get(folded_match, folded_match)


@dataclass(frozen=True, slots=True)
class _Folded:
    """A case-folded text, and where its characters were in the original (folding can lengthen them)."""

    text: str
    starts: tuple[int, ...] = ()  # where, in the folded text, each lengthened character's folding starts
    origins: tuple[int, ...] = ()  # where that character is in the original text
    lengths: tuple[int, ...] = ()  # the length of its folding
    extra: tuple[int, ...] = ()  # characters added by the foldings up to and including this one

    @classmethod
    def of(cls, text: str) -> "_Folded":
        folded = text.casefold()
        if len(folded) == len(text):  # nothing lengthened: offsets are the same
            return cls(folded)
        starts: list[int] = []
        origins: list[int] = []
        lengths: list[int] = []
        extra: list[int] = []
        added = 0
        for match in _LENGTHENED_BY_FOLDING.finditer(text):
            origin = match.start()
            length = len(match.group().casefold())
            starts.append(origin + added)
            origins.append(origin)
            lengths.append(length)
            added += length - 1
            extra.append(added)
        return cls(folded, tuple(starts), tuple(origins), tuple(lengths), tuple(extra))

    def original(self, offset: int, end: bool = False) -> int:
        """The offset in the original text of `offset` in the folded one (an end inside a folding rounds up)."""
        index = bisect.bisect_right(self.starts, offset) - 1
        if index < 0:
            return offset
        inside = offset - self.starts[index]
        if inside < self.lengths[index]:
            return self.origins[index] + (1 if end and inside > 0 else 0)
        return offset - self.extra[index]


def _term_pattern(fold: str, word_boundary: bool) -> str:
    """One alternative of the Terms pattern: the folded term, then its boundary checks.

    The left check is a lookbehind placed after the term (`(?<!X.{n})`: the character n back is not X), so
    every alternative starts with its literal and the engine can skip ahead to where a term can begin."""
    escaped: str = regex.escape(fold)
    if not word_boundary:
        return escaped
    left = f"(?<!{_SPACED_WORD_CHAR}.{{{len(fold)}}})" if _needs_boundary(fold[0]) else ""
    right = f"(?!{_SPACED_WORD_CHAR})" if _needs_boundary(fold[-1]) else ""
    return f"{escaped}{left}{right}"


def _needs_boundary(char: str) -> bool:
    return bool(_WORD_CHAR.match(char)) and not _NO_SPACE_CHAR.match(char)


class Patterns:
    """Policy regular expressions (`regex` module, V0 syntax), labelled "pattern N" (N counts from 1).

    Refused when the policy loads: invalid expressions, expressions that match the empty string, and
    expressions that can backtrack catastrophically (see `check_pattern`). A scan that still runs out of time
    fails closed with one hit over the whole text labelled "pattern N timed out".
    """

    def __init__(self, patterns: Sequence[str], ignore_case: bool = True, window: int = 256) -> None:
        if isinstance(patterns, str):
            raise ValueError("patterns must be a list of strings, not one string")
        if not patterns:
            raise ValueError("no patterns given")
        if window < 1:
            raise ValueError(f"window must be at least 1, not {window}")
        compiled: list[Any] = []
        widths: list[int] = []
        for pattern in patterns:
            if not isinstance(pattern, str):
                raise ValueError(f"pattern {pattern!r} is not a string")
            problem = check_pattern(pattern)
            if problem is not None:
                raise ValueError(problem)
            compiled.append(compile_pattern(pattern, ignore_case))
            widths.append(_window(pattern, ignore_case, window))
        self._compiled = compiled
        self._window = max(widths)

    @property
    def window(self) -> int:
        return self._window

    def scan(self, text: str) -> list[Hit]:
        if not text:
            return []
        deadline = deadline_for(text)
        hits: list[Hit] = []
        for number, pattern in enumerate(self._compiled, 1):
            matches = find_all(pattern, text, deadline)
            if matches is None:
                return timed_out(text, f"pattern {number}")
            hits.extend(Hit(m.start(), m.end(), f"pattern {number}") for m in matches)
        return hits


def compile_pattern(pattern: str, ignore_case: bool = True) -> Any:
    """`pattern` compiled for scanning (check it with `check_pattern` first).

    Case-insensitive patterns get full case folding only when they contain a non-ASCII character: in `regex`,
    FULLCASE makes character classes with \\w up to ~100 times slower (`[\\w.-]+@[\\w-]+\\.\\w+` over 100 KB
    of "@": 158 ms against 1.9 ms), and an ASCII pattern gains little from it ("ss" would match "ß")."""
    if not ignore_case:
        return regex.compile(pattern, regex.V0)
    return regex.compile(pattern, SIMPLE_FLAGS if pattern.isascii() else FLAGS)


def _window(pattern: str, ignore_case: bool, default: int) -> int:
    width = max_width(pattern, ignore_case)
    if width is None or width > MAX_WINDOW:
        return default
    return width + CONTEXT
