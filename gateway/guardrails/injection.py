"""Prompt-injection and jailbreak heuristics as a text check.

    Injection(threshold=1.0, extra_patterns=())

Each heuristic of HEURISTICS is a weighted pattern (case-insensitive; any run of up to eight whitespace
characters may stand between words). A text is flagged when the weights of the DISTINCT heuristics that match
add up to at least `threshold`: then `scan` returns every match, labelled with its heuristic's name; below the
threshold it returns nothing. With the default threshold 1.0 one strong signal ("ignore all previous
instructions") is enough, while weak ones ("developer mode", a "### system:" line) need company.

    name                          weight  what it looks for
    ignore_previous_instructions  1.0     ignore / disregard / forget ... previous / prior / above instructions
    dan                           1.0     "you are (now) DAN", "do anything now", "DAN mode"
    developer_mode                0.6     "developer mode", "god mode", "jailbreak"
    reveal_system_prompt          0.8     reveal / print / repeat / show ... your instructions / the system prompt
    unrestricted_roleplay         0.8     pretend / act / behave ... without (any) restrictions / filters / rules
    from_now_on                   0.4     "from now on you will / must / are ..."
    fake_role_marker              0.7     chat-template or role markers in the text: <|im_start|>system, ### system:,
                                          [system], [INST], <<SYS>>, <system>
    obfuscated_instructions       0.5     decode / decrypt ... the following and follow / execute / obey

`extra_patterns` are the policy's own regular expressions, validated like `Patterns` (`check_pattern`), each a
heuristic of weight 1.0 labelled "pattern N" (N counts from 1).

window is 512 characters: every built-in heuristic spans at most that (a test checks it), and an extra pattern
counts with its own maximum width when bounded. Injected text longer than that across stream chunks is not
re-assembled. A scan that runs out of time fails closed (one hit over the whole text, "<name> timed out").
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import regex

from gateway.guardrails.base import Hit
from gateway.guardrails.text import check_pattern, compile_pattern, deadline_for, find_all, max_width, timed_out

WINDOW = 512

# In the patterns below, a space stands for a run of up to eight whitespace characters, and {words} for up to
# three other words in between ("ignore ALL OF YOUR previous instructions").
_SPACE = r"\s{1,8}"
_WORDS = r"(?:[\w'-]{1,20}\s{1,8}){0,3}?"


# Simple case folding: the patterns are ASCII, and full case folding makes character sets far slower.
_FLAGS = regex.V0 | regex.IGNORECASE | regex.MULTILINE


def _phrase(pattern: str) -> str:
    return pattern.replace("{words}", _WORDS).replace(" ", _SPACE)


_TABLE: tuple[tuple[str, float, str], ...] = (
    (
        "ignore_previous_instructions",
        1.0,
        r"\b(?:ignore|disregard|forget|override|bypass) {words}(?:previous|prior|preceding|above|earlier|former"
        r"|original|initial|system|existing) {words}(?:instructions?|prompts?|rules|directions|directives?"
        r"|guidelines|commands|context|constraints|guardrails|programming)\b"
        r"|\b(?:ignore|disregard|forget) (?:everything|anything|all) (?:above|before|previously|so far|until now)\b",
    ),
    (
        "dan",
        1.0,
        r"\byou(?: are|'re) (?:now )?(?:a |the )?(?-i:DAN)\b|\bdo anything now\b|\b(?-i:DAN) mode\b",
    ),
    (
        "developer_mode",
        0.6,
        r"\b(?:developer|god) mode\b|\bjailbr(?:eak(?:s|ed|ing)?|oken)\b",
    ),
    (
        "reveal_system_prompt",
        0.8,
        r"\b(?:reveal|print|repeat|show|display|output|leak|dump|recite|tell me|give me|share|what (?:is|are|were))"
        r" {words}(?:your {words}(?:instructions|prompt|system prompt|system message|rules|guidelines)"
        r"|the {words}(?:system prompt|system message|(?:initial|original|hidden|secret|system|developer)"
        r" (?:instructions|prompt|message)))\b",
    ),
    (
        "unrestricted_roleplay",
        0.8,
        r"\b(?:pretend|act|behave|roleplay|role-play|respond|answer|operate)\b[^.!?\n]{0,80}?"
        r"\b(?:without|with no|have no|has no|free (?:of|from)|(?:not|no longer) bound by)(?: any)?"
        r" {words}(?:restrictions?|filters?|rules|limits|limitations|guidelines|censorship|constraints|ethics"
        r"|morals|boundaries|safeguards)\b",
    ),
    (
        "from_now_on",
        0.4,
        r"\bfrom now on,? you(?:'ll| will| must| shall| should| are| have to| can)\b",
    ),
    (
        "fake_role_marker",
        0.7,
        r"<\|im_start\|>\s{0,8}(?:system|developer|assistant)\b"
        r"|<\|(?:im_end|im_sep|endoftext|system|start_header_id|end_header_id|eot_id)\|>"
        r"|^[^\S\n]{0,8}#{2,6}[^\S\n]{0,8}(?:system|developer)(?: (?:prompt|message|instructions?))?[^\S\n]{0,8}:"
        r"|^[^\S\n]{0,8}(?:system|developer)(?: prompt| message)?[^\S\n]{0,8}:"
        r"|\[/?(?:system|INST|SYS)\]|<</?SYS>>|</?(?:system|system_prompt|developer)>",
    ),
    (
        "obfuscated_instructions",
        0.5,
        r"\b(?:decode|decrypt|deobfuscate|unscramble|decipher)\b[^.!?\n]{0,60}?\b(?:and|then)(?: then)?"
        r" {words}(?:follow|execute|run|obey|perform|carry out|comply with|act on)\b",
    ),
)


# A word each heuristic's every match contains (case-insensitive): the cheap, linear test before the full one.
TRIGGERS: Mapping[str, str] = MappingProxyType(
    {
        "ignore_previous_instructions": r"ignore|disregard|forget|override|bypass",
        "dan": r"(?-i:DAN)|do\s{1,8}anything",
        "developer_mode": r"mode|jailbr",
        "reveal_system_prompt": r"instruction|prompt|message|rules|guideline",
        "unrestricted_roleplay": r"restriction|filter|rules|limit|guideline|censorship|constraint|ethics|morals"
        r"|boundaries|safeguard",
        "from_now_on": r"from\s{1,8}now",
        "fake_role_marker": r"<\||system|developer|\[/?(?:inst|sys)|<<",
        "obfuscated_instructions": r"decode|decrypt|deobfuscate|unscramble|decipher",
    }
)


@dataclass(frozen=True, slots=True)
class Heuristic:
    name: str
    weight: float
    source: str  # the pattern as written, before spaces are widened
    pattern: Any
    trigger: Any = None  # None: always run the pattern


HEURISTICS: tuple[Heuristic, ...] = tuple(
    Heuristic(name, weight, source, regex.compile(_phrase(source), _FLAGS), regex.compile(TRIGGERS[name], _FLAGS))
    for name, weight, source in _TABLE
)
_ANY_TRIGGER = regex.compile("|".join(TRIGGERS.values()), _FLAGS)


class Injection:
    """Prompt-injection heuristics: hits only when the distinct heuristics found weigh `threshold` or more."""

    def __init__(self, threshold: float = 1.0, extra_patterns: Sequence[str] = ()) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise ValueError(f"threshold must be a number, not {threshold!r}")
        if not math.isfinite(threshold) or threshold <= 0:
            raise ValueError(f"threshold must be a positive number, not {threshold!r}")
        if isinstance(extra_patterns, str):
            raise ValueError("extra_patterns must be a list of strings, not one string")
        extras: list[Heuristic] = []
        window = WINDOW
        for number, pattern in enumerate(extra_patterns, 1):
            problem = check_pattern(pattern) if isinstance(pattern, str) else f"pattern {pattern!r} is not a string"
            if problem is not None:
                raise ValueError(problem)
            extras.append(Heuristic(f"pattern {number}", 1.0, pattern, compile_pattern(pattern)))
            width = max_width(pattern)
            if width is not None:
                window = max(window, width + 2)
        self._threshold = float(threshold)
        self._heuristics = HEURISTICS + tuple(extras)
        self._window = window

    @property
    def window(self) -> int:
        return self._window

    def scan(self, text: str) -> list[Hit]:
        if not text or (len(self._heuristics) == len(HEURISTICS) and _ANY_TRIGGER.search(text) is None):
            return []
        deadline = deadline_for(text)
        hits: list[Hit] = []
        score = 0.0
        for heuristic in self._heuristics:
            if heuristic.trigger is not None and heuristic.trigger.search(text) is None:
                continue
            matches = find_all(heuristic.pattern, text, deadline)
            if matches is None:
                return timed_out(text, heuristic.name)
            if matches:
                score += heuristic.weight
                hits.extend(Hit(m.start(), m.end(), heuristic.name) for m in matches)
        if score < self._threshold:
            return []
        return sorted(hits, key=lambda hit: (hit.start, -hit.end))
