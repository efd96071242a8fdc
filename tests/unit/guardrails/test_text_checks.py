"""Denied terms and policy regular expressions: Unicode case folding, word boundaries, refusing patterns that
backtrack catastrophically, and scans that finish in bounded time or fail closed."""

import re
import time

import pytest

from gateway.guardrails import text
from gateway.guardrails.base import Hit
from gateway.guardrails.text import Patterns, Terms, check_pattern, max_width

ADVERSARIAL = [
    "a" * 100_000,
    "1" * 100_000,
    "@" * 100_000,
    "." * 100_000,
    "@." * 50_000,
    " " * 100_000 + "x",
    "a@" * 50_000,
    "ß" * 100_000,
    "机密" * 50_000,
]


def spans(check: Terms | Patterns, value: str) -> list[tuple[str, str]]:
    """(matched text, label) of every hit, to compare by content."""
    return [(value[hit.start : hit.end], hit.label) for hit in check.scan(value)]


# --- Terms: case folding -------------------------------------------------------------------------------------


def test_terms_match_whatever_the_case() -> None:
    terms = Terms(["Project Falcon"])
    assert spans(terms, "about PROJECT FALCON and project falcon") == [
        ("PROJECT FALCON", "Project Falcon"),
        ("project falcon", "Project Falcon"),
    ]


@pytest.mark.parametrize(
    ("term", "written"),
    [("straße", "STRASSE"), ("STRASSE", "straße"), ("straße", "Strasse"), ("ǅ", "Ǆ"), ("ǅ", "ǆ"), ("ΣΟΦΙΑ", "σοφια")],
)
def test_terms_match_with_full_unicode_case_folding(term: str, written: str) -> None:
    assert spans(Terms([term]), f"the {written} here") == [(written, term)]


def test_offsets_after_a_character_that_folds_longer_still_line_up() -> None:
    value = "Die Straße, ßß und das SECRET"
    terms = Terms(["secret", "strasse"])
    assert spans(terms, value) == [("Straße", "strasse"), ("SECRET", "secret")]


def test_a_term_split_by_case_folding_inside_a_word_is_not_a_match() -> None:
    assert Terms(["strasse"]).scan("ßstraße") == []


def test_terms_that_differ_only_in_case_are_one_term_labelled_as_first_written() -> None:
    terms = Terms(["Secret", "SECRET", "secret"])
    assert terms.terms == ["Secret"]
    assert spans(terms, "secret") == [("secret", "Secret")]


# --- Terms: word boundaries ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["classification", "subclass", "class_name", "class2", "myclass", "déclasse"])
def test_a_term_is_not_found_inside_a_longer_word(value: str) -> None:
    assert Terms(["class"]).scan(value) == []


@pytest.mark.parametrize("value", ["class", "a class.", "(class)", "x-class", "class!", "first-class", "«class»"])
def test_a_term_is_found_between_non_word_characters(value: str) -> None:
    assert spans(Terms(["class"]), value) == [("class", "class")]


def test_without_word_boundaries_a_term_is_found_inside_words() -> None:
    assert spans(Terms(["class"], word_boundary=False), "classification") == [("class", "class")]


def test_a_term_ending_in_punctuation_needs_no_boundary_there() -> None:
    assert spans(Terms(["C++"]), "C++11 and c++") == [("C++", "C++"), ("c++", "C++")]


@pytest.mark.parametrize(
    ("term", "value"),
    [
        ("机密", "这是机密文件"),  # Chinese
        ("社外秘", "これは社外秘です"),  # Japanese kanji in kana
        ("ヒミツ", "これはヒミツです"),  # Katakana
        ("ความลับ", "นี่คือความลับของบริษัท"),  # Thai
    ],
)
def test_terms_in_scripts_written_without_spaces_need_no_boundary(term: str, value: str) -> None:
    assert spans(Terms([term]), value) == [(term, term)]


def test_a_latin_term_next_to_chinese_characters_is_a_word() -> None:
    terms = Terms(["secret", "机密"])
    assert spans(terms, "这是secret文件, 机密document") == [("secret", "secret"), ("机密", "机密")]
    assert terms.scan("secretary") == []


def test_the_longest_term_wins_where_terms_overlap() -> None:
    assert spans(Terms(["secret", "top secret"]), "a top secret plan") == [("top secret", "top secret")]


# --- Terms: parameters and window ----------------------------------------------------------------------------


@pytest.mark.parametrize("terms", [["ok", ""], ["ok", "   "], ["ok", "\t\n"]])
def test_empty_terms_are_refused_naming_their_position(terms: list[str]) -> None:
    with pytest.raises(ValueError, match=r"term 2 .* is empty"):
        Terms(terms)


@pytest.mark.parametrize("terms", [[], "secret"])
def test_no_terms_or_a_bare_string_is_refused(terms: list[str]) -> None:
    with pytest.raises(ValueError):
        Terms(terms)


def test_the_window_covers_the_longest_term_after_case_folding() -> None:
    # "ΐ" folds to three characters, so "ΐΐ" can match up to six
    assert Terms(["ab", "ΐΐ"]).window >= 6
    assert Terms(["top secret"]).window >= len("top secret")


# --- Patterns ------------------------------------------------------------------------------------------------


def test_patterns_are_labelled_by_their_number_never_by_the_matched_text() -> None:
    patterns = Patterns([r"\bproj-\d{4}\b", r"[A-Z]{2}-\d{6}"])
    hits = patterns.scan("see PROJ-1234 and ab-123456")
    assert [(hit.label, hit.start, hit.end) for hit in hits] == [("pattern 1", 4, 13), ("pattern 2", 18, 27)]


def test_patterns_can_be_case_sensitive() -> None:
    assert Patterns([r"SECRET"], ignore_case=False).scan("secret") == []
    assert len(Patterns([r"SECRET"]).scan("secret")) == 1


def test_a_non_ascii_pattern_folds_case_fully() -> None:
    assert spans(Patterns(["straße"]), "STRASSE") == [("STRASSE", "pattern 1")]


def test_regex_only_syntax_is_accepted() -> None:
    patterns = Patterns([r"\p{Han}{2,4}", r"\p{Lu}{3}\d"])
    assert spans(patterns, "abc 机密 XYZ9") == [("机密", "pattern 1"), ("XYZ9", "pattern 2")]


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("(", "invalid regular expression '(': missing )"),
        ("[z-a]", "invalid regular expression '[z-a]'"),
        (r"\p{NoSuchProperty}", "invalid regular expression"),
        ("a*", "pattern 'a*' matches the empty string"),
        (r"\b", "matches the empty string"),
        ("(?=x)", "matches the empty string"),
        ("foo|", "matches the empty string"),
    ],
)
def test_unusable_patterns_are_refused_naming_the_pattern(pattern: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Patterns(["fine", pattern])


CATASTROPHIC = [
    r"(a+)+",
    r"(a*)*b",
    r"(a|aa)+",
    r"(a|b|ab)*c",
    r"(\w+\s?)+$",
    r"(.*a){20}",
    r"(x+x+)+y",
    r"^(a+)+$",
    r"(aa?)+$",
    r"(\d{1,3}\.?)+$",
    r"([^a]|b)+c",
    r"(?>(a+)+b)",
    r"(\p{L}+)+$",
    r"([a-z]{1,100}x){50}",
    r"^([a-zA-Z0-9])(([\-.]|[_]+)?([a-zA-Z0-9]+))*(@){1}[a-z0-9]+[.]{1}(([a-z]{2,3})|([a-z]{2,3}[.]{1}[a-z]{2,3}))$",
]


@pytest.mark.parametrize("pattern", CATASTROPHIC)
def test_patterns_that_backtrack_catastrophically_are_refused(pattern: str) -> None:
    problem = check_pattern(pattern)
    assert problem is not None and "can backtrack catastrophically" in problem and pattern in problem
    with pytest.raises(ValueError, match="can backtrack catastrophically"):
        Patterns([pattern])


def test_refusing_a_catastrophic_pattern_is_fast() -> None:
    started = time.perf_counter()
    for pattern in CATASTROPHIC:
        assert check_pattern(pattern) is not None
    # nested repeats deep enough to make `regex` itself take seconds (or all memory) to compile
    assert check_pattern("(?:" * 50 + "a+" + ")+" * 50) is not None
    assert check_pattern("(?|" * 50 + "a+" + ")+" * 50) is not None
    assert time.perf_counter() - started < 1.0


SAFE = [
    r"\b\d{3}-\d{2}-\d{4}\b",
    r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
    r"(?:\d[ -]*?){13,16}",
    r"((?:[a-z0-9-]+\.)+[a-z]{2,})",
    r"(\d{1,3}\.){3}\d{1,3}",
    r"(\d{1,3}\.)+\d",
    r"(\w+\s)+end",
    r"(?:\s*\w+\s*,)+",
    r"(ab?)+",
    r"(cat|dog)+",
    r"(a+)++b",
    r"(?>a+)+b",
    r"(?:[a-z]++\s?)+",
]


@pytest.mark.parametrize("pattern", SAFE)
def test_patterns_with_unambiguous_repeats_are_accepted(pattern: str) -> None:
    assert check_pattern(pattern) is None
    Patterns([pattern])


def test_the_window_is_the_longest_match_of_a_bounded_pattern() -> None:
    assert Patterns([r"\d{16}"]).window == 16 + text.CONTEXT
    assert Patterns([r"\d{16}", r"[a-z]{3,40}"]).window == 40 + text.CONTEXT


def test_the_window_of_an_unbounded_pattern_is_the_argument() -> None:
    assert Patterns([r"\d+"]).window == 256
    assert Patterns([r"\d+"], window=1000).window == 1000
    with pytest.raises(ValueError, match="window"):
        Patterns([r"\d+"], window=0)


def test_lookarounds_count_in_the_window() -> None:
    assert max_width(r"(?<=password: )\S{8,20}") == len("password: ") + 20


def test_case_folding_can_widen_a_non_ascii_pattern() -> None:
    assert max_width("ß") == 3
    assert max_width("ß", ignore_case=False) == 1


# --- bounded time, failing closed ----------------------------------------------------------------------------


def test_a_scan_out_of_time_fails_closed_over_the_whole_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(text, "TIMEOUT", 0.0)
    monkeypatch.setattr(text, "TIMEOUT_PER_CHAR", 0.0)
    value = "nothing to see"
    assert Patterns([r"zzz"]).scan(value) == [Hit(0, len(value), "pattern 1 timed out")]
    assert Terms(["zzz"]).scan(value) == [Hit(0, len(value), "terms timed out")]


def test_a_slow_pattern_that_passes_the_static_check_times_out_and_fails_closed() -> None:
    patterns = Patterns([r"\s+$"])  # quadratic on a long run of spaces that is not at the end
    value = " " * 100_000 + "x"
    started = time.perf_counter()
    assert patterns.scan(value) == [Hit(0, len(value), "pattern 1 timed out")]
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize("value", ADVERSARIAL, ids=lambda value: f"{value[:2]!r}x{len(value)}")
def test_adversarial_input_is_scanned_in_bounded_time(value: str) -> None:
    checks: list[Terms | Patterns] = [
        Terms(["secret", "top secret", "机密", "strasse", "a a"]),
        Patterns(
            [
                r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
                r"[\w.-]+@[\w-]+\.\w+",
                r"(?:\d[ -]*?){13,16}",
                r"\b\d{3}-\d{2}-\d{4}\b",
                r"((?:[a-z0-9-]+\.)+[a-z]{2,})",
            ]
        ),
    ]
    for check in checks:
        started = time.perf_counter()
        check.scan(value)
        assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize("value", ["", "\ud800", "\x00\x00", "e\u0301\u0301\u0301", "\U0010ffff" * 3, "\r\n" * 10])
def test_odd_text_never_raises(value: str) -> None:
    Terms(["secret", "é"]).scan(value)
    Patterns([r"\w+", r"[^\x00-\x7f]"]).scan(value)
