"""Is a policy regular expression safe to run? A static check for catastrophic backtracking, and match widths.

    check_pattern(pattern) -> str | None      what is wrong with a policy regular expression, if anything
    max_width(pattern) -> int | None          the longest text one match can span (None: unbounded)

Both read the tree of Python's own `re` parser (regex-only property classes are read as \\w). Compiling a
pattern with nested repeats takes the `regex` module exponential time, so the check runs before any compile.
"""

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from re import _constants as sre_constants  # type: ignore[attr-defined]
from re import _parser as sre_parser  # type: ignore[attr-defined]
from types import MappingProxyType
from typing import Any

import regex

# Case-insensitive matching with full case folding; V0 is the `re`-compatible dialect of `regex`.
FLAGS = regex.V0 | regex.IGNORECASE | regex.FULLCASE
# Groups of a pattern the static analysis cannot read may nest this deep (compiling deeper ones can explode).
MAX_UNANALYSED_NESTING = 8


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
