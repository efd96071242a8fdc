"""Denied terms and regular expressions as text checks, and the static safety check for policy patterns.

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
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from re import _constants as sre_constants  # type: ignore[attr-defined]
from re import _parser as sre_parser  # type: ignore[attr-defined]
from types import MappingProxyType
from typing import Any

import regex

from gateway.guardrails.base import Hit

# A scan may take TIMEOUT seconds, plus TIMEOUT_PER_CHAR per character of the text scanned.
TIMEOUT = 0.05
TIMEOUT_PER_CHAR = 0.5e-6
# Case-insensitive matching with full case folding; V0 is the `re`-compatible dialect of `regex`.
FLAGS = regex.V0 | regex.IGNORECASE | regex.FULLCASE
# Simple case folding: what a case-insensitive pattern written in ASCII gets (see `compile_pattern`).
SIMPLE_FLAGS = regex.V0 | regex.IGNORECASE
# A bounded pattern wider than this gets the `window` argument instead (a bigger stream carry-over isn't worth it).
MAX_WINDOW = 65536
# Groups of a pattern the static analysis cannot read may nest this deep (compiling deeper ones can explode).
MAX_UNANALYSED_NESTING = 8
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


def check_pattern(pattern: str) -> str | None:
    """What is wrong with `pattern` as a policy regular expression, or None if it can be used.

    Wrong are: not compiling with the `regex` module; matching the empty string (it would match everywhere);
    and backtracking catastrophically. The last is found statically on the tree of Python's own `re` parser:
    a repeat that can stop or go on at a character that could also come next (`a+` in `(a+)+`, `\\w+` in
    `(\\w+\\s?)+`, `.*` in `(.*a){20}`), or alternatives that can start alike (`(a|aa)+`), nested inside
    another repeat. Possessive repeats and atomic groups (`a++`, `(?>...)`) are not backtracked into and
    pass. A pattern the `re` parser cannot read (regex-only syntax) skips this analysis; the scan timeout
    still bounds it.
    """
    # The static analysis comes first: `regex` itself takes exponential time to compile nested repeats.
    tree = _parse(pattern)
    if tree is not None:
        try:
            empty = tree.getwidth()[0] == 0
            problem = _backtracking(tree, _Chars(), ())
        except RecursionError:
            return f"pattern '{pattern}' is nested too deeply"
        if empty:
            return f"pattern '{pattern}' matches the empty string"
        if problem is not None:
            return f"pattern '{pattern}' can backtrack catastrophically ({problem})"
    elif _nesting(pattern) > MAX_UNANALYSED_NESTING:
        return f"pattern '{pattern}' is nested too deeply"
    try:
        compiled = regex.compile(pattern, FLAGS)
    except (regex.error, ValueError, OverflowError, RecursionError) as error:
        return f"invalid regular expression '{pattern}': {error}"
    if tree is None and _matches_empty(compiled):
        return f"pattern '{pattern}' matches the empty string"
    return None


def _nesting(pattern: str) -> int:
    """How deeply the groups of `pattern` nest (roughly: escapes and character classes are skipped)."""
    depth = deepest = 0
    escaped = in_class = False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth = max(0, depth - 1)
    return deepest


def _matches_empty(compiled: Any) -> bool:
    try:
        return any(m.end() == m.start() for sample in _EMPTY_SAMPLES for m in compiled.finditer(sample, timeout=0.1))
    except TimeoutError:
        return True


_EMPTY_SAMPLES = ("", "a", "Z", "0", " ", "ab cd", ".\n", "中文")


def _parse(pattern: str) -> Any:
    """The `re` parser's tree of `pattern` with regex-only property classes as \\w, or None if unreadable."""
    translated = _PROPERTY.sub(_property_to_word, pattern)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return sre_parser.parse(translated)
    except Exception:  # re.error, RecursionError, OverflowError...: regex-only syntax, analysed by timeout alone
        return None


# An escape sequence; group 1 is set for a Unicode property (\p{L}, \pL, \P{Lu}).
_PROPERTY = regex.compile(r"\\(?:([pP])(?:\{[^}]*\}|[A-Za-z])|.)", regex.DOTALL)


def _property_to_word(match: Any) -> str:
    kind = match.group(1)
    if kind is None:
        return str(match.group())
    return r"\w" if kind == "p" else r"\W"


# --- the backtracking analysis -------------------------------------------------------------------------------

_MAXREPEAT: int = sre_constants.MAXREPEAT
# A repeat whose count can vary by this much or more is "open": nested in a repeat it multiplies the work.
_OPEN_SPAN = 16
# Characters tried when asking whether two character sets overlap, besides the ones the sets name.
_SAMPLE_CHARS = "".join(map(chr, range(0x180))) + "ßſΩωЯя中あアกລក၀٣४\u00a0\u2028\u200b\u3000😀ǅﬀİı"
_CATEGORIES: Mapping[str, Any] = MappingProxyType(
    {
        "CATEGORY_DIGIT": regex.compile(r"\d"),
        "CATEGORY_NOT_DIGIT": regex.compile(r"\D"),
        "CATEGORY_SPACE": regex.compile(r"\s"),
        "CATEGORY_NOT_SPACE": regex.compile(r"\S"),
        "CATEGORY_WORD": regex.compile(r"\w"),
        "CATEGORY_NOT_WORD": regex.compile(r"\W"),
        "CATEGORY_LINEBREAK": regex.compile(r"\n"),
        "CATEGORY_NOT_LINEBREAK": regex.compile(r"[^\n]"),
    }
)

_Item = tuple[Any, Any]  # (opcode, argument) of the `re` parser


@dataclass(frozen=True, slots=True)
class _Chars:
    """An over-approximated set of characters: the union of single-character items of the `re` parser."""

    items: tuple[_Item, ...] = ()

    def __or__(self, other: "_Chars") -> "_Chars":
        return _Chars(self.items + other.items)

    def overlaps(self, other: "_Chars") -> bool:
        """Whether some character (compared case-insensitively) is in both sets."""
        if not self.items or not other.items:
            return False
        named = _with_case_variants(_named_chars(self.items + other.items))
        return any(_has(self.items, c) and _has(other.items, c) for c in (*_SAMPLE_VARIANTS, *named))


_ANY = _Chars(((sre_constants.ANY, None),))


def _with_case_variants(chars: Iterable[str]) -> tuple[str, ...]:
    """`chars` and their upper and lower case, each once (compared case-insensitively, these all match)."""
    variants = (variant for char in chars for variant in (char, char.lower()[:1], char.upper()[:1]))
    return tuple(dict.fromkeys(variants))


_SAMPLE_VARIANTS = _with_case_variants(_SAMPLE_CHARS)


def _named_chars(items: Iterable[_Item]) -> Iterable[str]:
    """The characters a set names explicitly (literals and range ends, with their neighbours)."""
    for op, av in items:
        if op in (sre_constants.LITERAL, sre_constants.NOT_LITERAL):
            yield chr(av)
        elif op is sre_constants.RANGE:
            yield from (chr(c) for c in (av[0], av[1], min(av[0] + 1, av[1]), max(av[1] - 1, av[0])))
        elif op is sre_constants.IN:
            yield from _named_chars(av)


def _has(items: tuple[_Item, ...], char: str) -> bool:
    return bool(char) and any(_item_has(op, av, char) for op, av in items)


def _item_has(op: Any, av: Any, char: str) -> bool:
    if op is sre_constants.LITERAL:
        return bool(char == chr(av))
    if op is sre_constants.NOT_LITERAL:
        return bool(char != chr(av))
    if op is sre_constants.RANGE:
        return bool(av[0] <= ord(char) <= av[1])
    if op is sre_constants.CATEGORY:
        category = _CATEGORIES.get(str(av))
        return category is None or bool(category.match(char))
    if op is sre_constants.IN:
        negate = bool(av) and av[0][0] is sre_constants.NEGATE
        members = av[1:] if negate else av
        return negate != any(_item_has(o, a, char) for o, a in members)
    return True  # ANY, and anything unexpected: could be any character


def _first(seq: Sequence[_Item]) -> tuple[_Chars, bool]:
    """(the characters a match of `seq` can start with, whether it can match the empty string)."""
    chars = _Chars()
    for op, av in seq:
        item_chars, nullable = _start(op, av)
        chars = chars | item_chars
        if not nullable:
            return chars, False
    return chars, True


def _start(op: Any, av: Any) -> tuple[_Chars, bool]:
    """(the characters one item can start with, whether it can match the empty string)."""
    if op in (sre_constants.LITERAL, sre_constants.NOT_LITERAL, sre_constants.ANY, sre_constants.IN):
        return _Chars(((op, av),)), False
    if op is sre_constants.SUBPATTERN:
        return _first(av[3])
    if op is sre_constants.ATOMIC_GROUP:
        return _first(av)
    if op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT, sre_constants.POSSESSIVE_REPEAT):
        chars, nullable = _first(av[2])
        return chars, nullable or av[0] == 0
    if op in (sre_constants.BRANCH, sre_constants.GROUPREF_EXISTS):
        alternatives = [_first(alternative) for alternative in _alternatives(op, av)]
        chars = _Chars()
        for alternative_chars, _ in alternatives:
            chars = chars | alternative_chars
        return chars, any(nullable for _, nullable in alternatives)
    if op in (sre_constants.AT, sre_constants.ASSERT, sre_constants.ASSERT_NOT):
        return _Chars(), True
    return _ANY, True  # a back reference: could be anything


def _alternatives(op: Any, av: Any) -> list[Sequence[_Item]]:
    if op is sre_constants.BRANCH:
        return list(av[1])
    return [av[1], av[2] if av[2] is not None else []]  # GROUPREF_EXISTS: (group, yes, no)


def _backtracking(seq: Sequence[_Item], follow: _Chars, repeats: tuple[bool, ...]) -> str | None:
    """The first catastrophic-backtracking problem in `seq`, or None.

    `follow` is what can come after `seq`; `repeats` says, for each enclosing repeat that can run more than
    once (innermost last, reset inside atomic groups), whether its count is open.
    """
    for position in reversed(range(len(seq))):
        op, av = seq[position]
        problem = _item_backtracking(op, av, follow, repeats)
        if problem is not None:
            return problem
        chars, nullable = _start(op, av)
        follow = chars | follow if nullable else chars
    return None


def _item_backtracking(op: Any, av: Any, follow: _Chars, repeats: tuple[bool, ...]) -> str | None:
    if op is sre_constants.SUBPATTERN:
        return _backtracking(av[3], follow, repeats)
    if op in (sre_constants.BRANCH, sre_constants.GROUPREF_EXISTS):
        return _branch_backtracking(_alternatives(op, av), follow, repeats)
    if op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT):
        return _repeat_backtracking(av[0], av[1], av[2], follow, repeats)
    if op is sre_constants.POSSESSIVE_REPEAT:
        return _backtracking(av[2], _Chars(), ())
    if op is sre_constants.ATOMIC_GROUP:
        return _backtracking(av, _Chars(), ())
    if op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
        return _backtracking(av[1], _Chars(), ())
    return None


def _repeat_backtracking(
    low: int, high: int, body: Sequence[_Item], follow: _Chars, repeats: tuple[bool, ...]
) -> str | None:
    is_open = high == _MAXREPEAT or high - low >= _OPEN_SPAN
    body_start, _ = _first(body)
    # the repeat can go on or stop at a character either way could take: ambiguous, costly if repeated itself
    if high > low and _costly(repeats, is_open) and body_start.overlaps(follow):
        return "nested quantifier"
    inner = (*repeats, is_open) if high > 1 else repeats
    return _backtracking(body, body_start | follow, inner)


def _branch_backtracking(
    alternatives: Sequence[Sequence[_Item]], follow: _Chars, repeats: tuple[bool, ...]
) -> str | None:
    starts: list[_Chars] = []
    for alternative in alternatives:
        problem = _backtracking(alternative, follow, repeats)
        if problem is not None:
            return problem
        chars, nullable = _first(alternative)
        starts.append(chars | follow if nullable else chars)
    if _costly(repeats, False):
        for index, start in enumerate(starts):
            if any(start.overlaps(other) for other in starts[index + 1 :]):
                return "overlapping alternatives"
    return None


def _costly(repeats: tuple[bool, ...], is_open: bool) -> bool:
    """Whether an ambiguity inside these enclosing repeats multiplies: one of them, or itself, is open."""
    return bool(repeats) and (is_open or any(repeats))


# --- windows -------------------------------------------------------------------------------------------------

_UNBOUNDED = 1 << 62


def max_width(pattern: str, ignore_case: bool = True) -> int | None:
    """The longest text one match of `pattern` can span, what its lookarounds look at included; None when
    unbounded or when Python's `re` parser cannot read the pattern (regex-only syntax)."""
    tree = _parse(pattern)
    if tree is None:
        return None
    try:
        reach = _reach(list(tree))
        non_ascii = _has_non_ascii(list(tree))
    except RecursionError:
        return None
    if reach >= _UNBOUNDED:
        return None
    if ignore_case and non_ascii:
        reach *= 3  # full case folding: one pattern character can match up to three ("ΐ" matches "ΐ")
    return reach


def _window(pattern: str, ignore_case: bool, default: int) -> int:
    width = max_width(pattern, ignore_case)
    if width is None or width > MAX_WINDOW:
        return default
    return width + CONTEXT


def _reach(seq: Sequence[_Item]) -> int:
    return min(_UNBOUNDED, sum(_item_reach(op, av) for op, av in seq))


def _item_reach(op: Any, av: Any) -> int:
    if op in (sre_constants.LITERAL, sre_constants.NOT_LITERAL, sre_constants.ANY, sre_constants.IN):
        return 1
    if op is sre_constants.SUBPATTERN:
        return _reach(av[3])
    if op is sre_constants.ATOMIC_GROUP:
        return _reach(av)
    if op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
        return _reach(av[1])
    if op in (sre_constants.BRANCH, sre_constants.GROUPREF_EXISTS):
        return max((_reach(alternative) for alternative in _alternatives(op, av)), default=0)
    if op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT, sre_constants.POSSESSIVE_REPEAT):
        body = _reach(av[2])
        if body == 0:
            return 0
        return _UNBOUNDED if av[1] == _MAXREPEAT else min(_UNBOUNDED, av[1] * body)
    if op is sre_constants.AT:
        return 0
    return _UNBOUNDED  # a back reference


def _has_non_ascii(seq: Sequence[_Item]) -> bool:
    for op, av in _nodes(seq):
        if op in (sre_constants.LITERAL, sre_constants.NOT_LITERAL) and av > 0x7F:
            return True
        if op is sre_constants.RANGE and av[1] > 0x7F:
            return True
    return False


def _nodes(seq: Sequence[_Item]) -> Iterable[_Item]:
    """Every item of a parsed pattern, nested ones included."""
    for op, av in seq:
        yield op, av
        if op is sre_constants.IN:
            yield from av
        elif op is sre_constants.SUBPATTERN:
            yield from _nodes(av[3])
        elif op is sre_constants.ATOMIC_GROUP:
            yield from _nodes(av)
        elif op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
            yield from _nodes(av[1])
        elif op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT, sre_constants.POSSESSIVE_REPEAT):
            yield from _nodes(av[2])
        elif op in (sre_constants.BRANCH, sre_constants.GROUPREF_EXISTS):
            for alternative in _alternatives(op, av):
                yield from _nodes(alternative)
