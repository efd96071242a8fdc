"""Reversible pseudonymisation, pure: the per-request vault of placeholders, redaction of detected spans, and
restoring placeholders in an answer.

    vault = Vault()                                   one per request
    redact(text, spans, actions, vault, salt) -> str  detected values replaced by their entity's action
    restore(text, vault) -> str                       pseudonymise placeholders back to the values

What each action writes in place of a value (the label is the entity type, e.g. EMAIL_ADDRESS):

    mask           <EMAIL_ADDRESS>
    pseudonymise   <EMAIL_ADDRESS_1>      the same value gets the same placeholder everywhere in the request,
                                          numbered per entity type from 1; restorable (kept in `originals`)
    hash           <EMAIL_ADDRESS:3f2a9c1b>  the first 8 hex digits of HMAC-SHA256(salt, value)
    block          nothing here: the caller refuses the request before redacting

The vault counts every replacement per (entity, action) for the audit event: types, counts and actions,
never values. Labels are normalised to [A-Z_] (an entity "uk-nhs" is labelled UK_NHS), so every
pseudonymise placeholder is found by the one pattern `<[A-Z_]+_\\d+>` when the answer is restored.
"""

import hashlib
import hmac
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from gateway import codec

Action = Literal["mask", "pseudonymise", "hash", "block"]

# What a pseudonymise placeholder looks like (unknown ones, made up by a model, are left as they are).
PLACEHOLDER = re.compile(r"<[A-Z_]+_\d+>")
_NOT_LABEL = re.compile(r"[^A-Z_]")


_PLACEHOLDER_PARTS = re.compile(r"<([A-Z_]+)_(\d+)>")


@dataclass(frozen=True, slots=True)
class Span:
    """A detected value in a text: text[start:end] is an `entity` (a Presidio entity type)."""

    start: int
    end: int
    entity: str


def label(entity: str) -> str:
    """The entity type as written in a placeholder: upper case, anything but A-Z and _ as _."""
    return _NOT_LABEL.sub("_", entity.upper()) or "PII"


class Vault:
    """The replacements of one request: pseudonymise placeholders (and their values, to restore the answer)
    and how many values of each entity type each action replaced."""

    def __init__(self) -> None:
        self.originals: dict[str, str] = {}  # placeholder -> value (pseudonymise only)
        self._issued: dict[tuple[str, str], str] = {}  # (label, value) -> placeholder
        self._numbers: Counter[str] = Counter()  # label -> placeholders issued
        self._counts: Counter[tuple[str, Action]] = Counter()
        self._longest = 0
        self._preloaded: set[str] = set()

    def placeholder(self, entity: str, value: str) -> str:
        """The pseudonym of `value`: `<EMAIL_ADDRESS_1>`, the same for the same value all through the request."""
        name = label(entity)
        issued = self._issued.get((name, value))
        if issued is not None:
            return issued
        self._numbers[name] += 1
        issued = f"<{name}_{self._numbers[name]}>"
        self._issued[(name, value)] = issued
        self.originals[issued] = value
        self._longest = max(self._longest, len(issued))
        return issued

    def preload(self, issued: Mapping[str, str]) -> None:
        """Seed with pseudonyms issued earlier in the conversation (placeholder → value): the same value gets
        the same placeholder again, and new ones continue the numbering."""
        for placeholder, value in issued.items():
            match = _PLACEHOLDER_PARTS.fullmatch(placeholder)
            if match is None:
                continue
            name, number = match.group(1), int(match.group(2))
            self._issued[(name, value)] = placeholder
            self.originals[placeholder] = value
            self._numbers[name] = max(self._numbers[name], number)
            self._longest = max(self._longest, len(placeholder))
        self._preloaded = set(self.originals)

    def issued_since_preload(self) -> dict[str, str]:
        """The pseudonyms this request added (to save back to the conversation)."""
        return {p: v for p, v in self.originals.items() if p not in self._preloaded}

    def mask(self, entity: str) -> str:
        """`<EMAIL_ADDRESS>`: the type only."""
        return f"<{label(entity)}>"

    def hashed(self, entity: str, value: str, salt: bytes) -> str:
        """`<EMAIL_ADDRESS:3f2a9c1b>`: the same value always gives the same tag (for one salt), not reversible."""
        digest = hmac.new(salt, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
        return f"<{label(entity)}:{digest[:8]}>"

    def record(self, entity: str, action: Action, count: int = 1) -> None:
        """Count replacements made (redact does; a caller replacing values itself should too)."""
        self._counts[(entity, action)] += count

    def counts(self) -> dict[tuple[str, Action], int]:
        """Every replacement made, per (entity type, action): what the audit event records."""
        return dict(self._counts)

    @property
    def longest(self) -> int:
        """The length of the longest pseudonymise placeholder issued (0: none): the most a stream holds back."""
        return self._longest


def redact(text: str, spans: Sequence[Span], actions: Mapping[str, Action], vault: Vault, salt: bytes) -> str:
    """`text` with each detected span replaced according to its entity's action (entities without one, and
    "block", are left). Overlapping spans: the longer is kept, then the earlier."""
    size = len(text)
    chosen = _resolve(
        [s for s in spans if actions.get(s.entity) in ("mask", "pseudonymise", "hash") and 0 <= s.start < s.end <= size]
    )
    if not chosen:
        return text
    pieces: list[str] = []
    at = 0
    for span in chosen:  # in text order, so placeholders are numbered as the values are read
        action = actions[span.entity]
        value = text[span.start : span.end]
        if action == "pseudonymise":
            replacement = vault.placeholder(span.entity, value)
        elif action == "hash":
            replacement = vault.hashed(span.entity, value, salt)
        else:
            replacement = vault.mask(span.entity)
        vault.record(span.entity, action)
        pieces += (text[at : span.start], replacement)
        at = span.end
    pieces.append(text[at:])
    return "".join(pieces)


def _resolve(spans: list[Span]) -> list[Span]:
    """The spans kept, in text order, none overlapping: longest first, then earliest, each kept if it
    overlaps none kept before it."""
    kept: list[Span] = []
    for span in sorted(spans, key=lambda s: (s.start - s.end, s.start)):
        if all(span.end <= other.start or other.end <= span.start for other in kept):
            kept.append(span)
    kept.sort(key=lambda s: s.start)
    return kept


def restore(text: str, vault: Vault, *, json_string: bool = False) -> str:
    """`text` with every pseudonymise placeholder of the vault replaced by its value, however often it
    occurs; placeholder-looking strings the vault never issued are left. `json_string`: the text is JSON
    (tool-call arguments), so values are inserted escaped as JSON string content."""
    originals = vault.originals
    if not originals or "<" not in text:
        return text

    def value(match: re.Match[str]) -> str:
        found = match.group(0)
        original = originals.get(found)
        if original is None:
            return found
        return codec.dumps(original).decode()[1:-1] if json_string else original

    return PLACEHOLDER.sub(value, text)
