"""The one guardrail contract, and how a set of text rules is applied to a piece of text.

A text check is a pure, synchronous function of a string that returns where it matched (`Hit`s): guardrails
are CPU work of microseconds, so they run inline, and the streaming scanner needs the spans to carry matches
across chunk boundaries and to redact. Parameters are validated and compiled when the policy loads; a check
never raises on any input and finishes in bounded time.

    TextCheck.scan(text) -> list[Hit]     spans that matched, labelled without the matched text
    TextCheck.window                      the longest text one match can span (the stream carry-over)

A `TextRule` is a compiled policy rule around a check: which policy it comes from, what to do on a hit.
`apply(rules, text)` runs them all: the findings, and the text with the spans of `redact` rules replaced.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

Action = Literal["block", "redact", "warn", "shadow"]
Where = Literal["input", "output"]
# The strictest action decides what happens to a request: block > redact > warn > shadow.
SEVERITY: dict[Action, int] = {"shadow": 0, "warn": 1, "redact": 2, "block": 3}


@dataclass(frozen=True, slots=True)
class Hit:
    """Where a check matched: text[start:end]. `label` names what matched (a term, a secret kind, a topic),
    never the matched text itself, so it can go to logs and the audit store."""

    start: int
    end: int
    label: str


class TextCheck(Protocol):
    @property
    def window(self) -> int: ...

    def scan(self, text: str) -> list[Hit]: ...


@dataclass(frozen=True, slots=True)
class TextRule:
    policy: str
    rule: str
    action: Action
    message: str
    check: TextCheck
    replacement: str = "[REDACTED]"
    kind: str = "text"


@dataclass(frozen=True, slots=True)
class Finding:
    rule: TextRule
    hit: Hit


def apply(rules: Sequence[TextRule], text: str) -> tuple[str, list[Finding]]:
    """Run every rule on `text`: (text with `redact` spans replaced, every finding in rule order)."""
    findings: list[Finding] = []
    for rule in rules:
        findings.extend(Finding(rule, hit) for hit in rule.check.scan(text))
    redactions = [f for f in findings if f.rule.action == "redact"]
    return (redact(text, redactions) if redactions else text), findings


def redact(text: str, findings: Sequence[Finding]) -> str:
    """Replace the spans of `findings` (overlapping spans merged, the first rule's replacement kept)."""
    spans = sorted(((f.hit.start, f.hit.end, f.rule.replacement) for f in findings), key=lambda s: (s[0], -s[1]))
    out: list[str] = []
    position = 0
    for start, end, replacement in spans:
        if end <= position:
            continue
        if start < position:  # overlaps the previous span: extend it
            position = end
            continue
        out.append(text[position:start])
        out.append(replacement)
        position = end
    out.append(text[position:])
    return "".join(out)


def strictest(findings: Sequence[Finding]) -> Finding | None:
    """The finding whose action decides the request (the first of the most severe)."""
    best: Finding | None = None
    for finding in findings:
        if best is None or SEVERITY[finding.rule.action] > SEVERITY[best.rule.action]:
            best = finding
    return best
