"""Credential detectors: API keys, tokens and private keys that should not go to (or come from) a model.

    Secrets(kinds=None)      a text check for the given kinds (all of KINDS when None), each hit labelled by kind

KINDS, each a case-sensitive pattern plus, where it keeps false positives down, a validation of the match:

    aws_access_key_id      AKIA/ASIA + 16 upper-case letters or digits, not all alike
    aws_secret_access_key  40 base64 characters, ONLY right after a key name mentioning aws or secret
                           (`aws_secret_access_key = ...`, `"SecretAccessKey": "..."`); alone they look like any
                           other base64. Must mix upper, lower case and digits. The hit covers the value only.
    openai_api_key         sk-..., sk-proj-..., sk-svcacct-..., sk-admin-... with 32-256 characters after
                           `sk-`: mixed case and digits, and a run of 20 letters/digits (not a hyphenated name)
    anthropic_api_key      sk-ant-<type><version>-... with 32-200 more characters, same randomness test
    github_token           ghp_/gho_/ghu_/ghs_/ghr_ + 36 or more letters/digits; github_pat_ + 60 or more
    slack_token            xoxa-/xoxb-/xoxp-/xoxr-/xoxs- + 1-3 numeric parts + a random part
    slack_webhook          https://hooks.slack.com/services|workflows|triggers/T.../.../<secret>
    google_api_key         AIza + 35 characters
    stripe_key             sk_live_/rk_live_ + 24 or more letters/digits
    jwt                    three base64url parts whose first decodes to a JSON object with "alg"
    private_key            -----BEGIN ... PRIVATE KEY----- up to its END line (within 6000 characters:
                           an RSA-4096 key fits), or, when the END line is missing, the base64 lines of
                           16-80 characters that follow (prose after them is not taken); also with the line
                           breaks escaped as \\n inside a JSON string. Needs a 40-character base64 run.
    gateway_key            this gateway's virtual keys: gk- + 12 hex + "." + 43 base64url characters

Every token must stand alone (no token character right before or after it), so a key-like run inside a longer
base64 blob, a UUID or a hash does not match; random parts must have some entropy, so documentation
placeholders (XXXX..., 0000...) do not match. A scan that runs out of time fails closed (one hit over the
whole text labelled "<kind> timed out").

The window is the longest match of the selected kinds: with private_key ~6.7k characters, jwt ~4.4k, the
others under 300.

Speed: each kind has trigger literals, one of which its every match contains (`akia`, `sk-`, `eyj`,
`-----begin `..., compared in lower case). Plain substring searches settle most texts in microseconds, even
the ~6 KB carry-over of a stream; only the kinds whose trigger is present run their full, time-bounded pattern.
"""

import base64
import binascii
import json
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import regex

from gateway.guardrails.base import Hit
from gateway.guardrails.text import CONTEXT, deadline_for, find_all, max_width, timed_out

Validator = Callable[[Any], bool]


@dataclass(frozen=True, slots=True)
class Detector:
    """One kind of credential: its pattern (a group named `value`, if any, is the span reported: what comes
    before it is context, not the secret), a check of each match, and its window."""

    kind: str
    pattern: Any
    validate: Validator
    window: int


def _entropy(text: str) -> float:
    """Shannon entropy of `text`, in bits per character."""
    if not text:
        return 0.0
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def _random_part(group: str, minimum: float = 3.0) -> Validator:
    """A validator: the named group of the match has at least `minimum` bits of entropy per character."""
    return lambda match: _entropy(match.group(group)) >= minimum


def _mixed(text: str) -> bool:
    return any(c.isupper() for c in text) and any(c.islower() for c in text) and any(c.isdigit() for c in text)


_ALNUM_RUN = regex.compile(r"[A-Za-z0-9]{20}")


def _random_key(match: Any) -> bool:
    """A generated API key body: mixed case and digits, with a long letter/digit run (not a-hyphenated-name)."""
    body = match.group("body")
    return _mixed(body) and _ALNUM_RUN.search(body) is not None


def _mixed_secret(match: Any) -> bool:
    secret = match.group("value")
    return _mixed(secret) and _entropy(secret) >= 4.0


def _jwt_header(match: Any) -> bool:
    """The first part of a JWT decodes to a JSON object naming its algorithm."""
    header = match.group("header")
    try:
        decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (binascii.Error, ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return False
    return isinstance(decoded, dict) and isinstance(decoded.get("alg"), str)


_BASE64_RUN = regex.compile(r"[A-Za-z0-9+/]{40}")


def _key_body(match: Any) -> bool:
    return _BASE64_RUN.search(match.group("block") or match.group("lines")) is not None


# A token character may not come right before or after a token (it would be part of something longer).
_B64 = r"[A-Za-z0-9+/_-]"
_PEM_LABEL = r"(?:[A-Z0-9]{1,12} ){0,3}PRIVATE KEY(?: BLOCK)?"
_NEWLINE = r"(?:\r?\n|\\r\\n|\\n)"  # a line break, or one escaped inside a JSON or shell string
_PEM_LINE = (
    rf"{_NEWLINE}[ \t]{{0,8}}(?:[A-Za-z0-9+/=]{{16,80}}|(?:Proc-Type|DEK-Info|Version|Comment): [^\r\n\\]{{1,80}})"
)

_TABLE: tuple[tuple[str, str, Validator], ...] = (
    (
        "aws_access_key_id",
        rf"(?<!{_B64})(?:AKIA|ASIA)(?P<id>[A-Z0-9]{{16}})(?!{_B64})",
        _random_part("id"),
    ),
    (
        "aws_secret_access_key",
        r"(?i:\b(?:aws|secret)[\w.-]{0,30})[\"']?[ \t]{0,4}(?:=|:|=>)[ \t]{0,4}[\"']?"
        r"(?P<value>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])",
        _mixed_secret,
    ),
    (
        "openai_api_key",
        rf"(?<!{_B64})sk-(?!ant-)(?P<body>[A-Za-z0-9_-]{{32,256}})(?!{_B64})",
        _random_key,
    ),
    (
        "anthropic_api_key",
        rf"(?<!{_B64})sk-ant-[a-z]{{2,10}}[0-9]{{0,3}}-(?P<body>[A-Za-z0-9_-]{{32,200}})(?!{_B64})",
        _random_key,
    ),
    (
        "github_token",
        rf"(?<!{_B64})(?:gh[pousr]_(?P<body>[A-Za-z0-9]{{36,251}})|github_pat_(?P<pat>[A-Za-z0-9_]{{60,255}}))"
        rf"(?!{_B64})",
        lambda m: _entropy(m.group("body") or m.group("pat")) >= 3.0,
    ),
    (
        "slack_token",
        r"(?<![A-Za-z0-9-])xox[abprs]-(?:[0-9]{1,15}-){1,3}(?P<secret>[A-Za-z0-9]{16,64})(?![A-Za-z0-9-])",
        _random_part("secret"),
    ),
    (
        "slack_webhook",
        r"https?://hooks\.slack\.com/(?:services|workflows|triggers)/T[A-Z0-9]{6,12}/[A-Z0-9]{6,12}/"
        r"(?:[0-9]{6,20}/)?(?P<secret>[A-Za-z0-9]{20,40})(?![A-Za-z0-9])",
        _random_part("secret"),
    ),
    (
        "google_api_key",
        rf"(?<!{_B64})AIza(?P<body>[0-9A-Za-z_-]{{35}})(?!{_B64})",
        _random_part("body"),
    ),
    (
        "stripe_key",
        rf"(?<!{_B64})(?:sk|rk)_live_(?P<body>[0-9A-Za-z]{{24,247}})(?!{_B64})",
        _random_part("body"),
    ),
    (
        "jwt",
        r"(?<![A-Za-z0-9+/_.-])(?P<header>eyJ[A-Za-z0-9_-]{8,600})\.[A-Za-z0-9_-]{2,3000}\.[A-Za-z0-9_-]{0,800}"
        r"(?![A-Za-z0-9+/_-]|\.[A-Za-z0-9_-])",
        _jwt_header,
    ),
    (
        "private_key",
        rf"-----BEGIN {_PEM_LABEL}-----(?:(?P<block>[A-Za-z0-9+/=\s:,.\\-]{{0,6000}}?)-----END {_PEM_LABEL}-----"
        rf"|(?P<lines>(?:{_PEM_LINE}){{1,64}}+))",
        _key_body,
    ),
    (
        "gateway_key",
        rf"(?<!{_B64})gk-[0-9a-f]{{12}}\.(?P<secret>[A-Za-z0-9_-]{{43}})(?!{_B64})",
        _random_part("secret"),
    ),
)


# Literals (lower case) one of which every match of the kind contains: the cheap test before the full one.
TRIGGERS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "aws_access_key_id": ("akia", "asia"),
        "aws_secret_access_key": ("aws", "secret"),
        "openai_api_key": ("sk-",),
        "anthropic_api_key": ("sk-ant-",),
        "github_token": ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
        "slack_token": ("xox",),
        "slack_webhook": ("hooks.slack.com/",),
        "google_api_key": ("aiza",),
        "stripe_key": ("_live_",),
        "jwt": ("eyj",),
        "private_key": ("-----begin ",),
        "gateway_key": ("gk-",),
    }
)


def _detector(kind: str, pattern: str, validate: Validator) -> Detector:
    width = max_width(pattern, ignore_case=False)
    if width is None:  # a bug in the table above: every credential pattern is bounded
        raise AssertionError(f"the {kind} pattern is unbounded")
    return Detector(kind, regex.compile(pattern, regex.V0), validate, width + CONTEXT)


KINDS: Mapping[str, Detector] = MappingProxyType(
    {kind: _detector(kind, pattern, validate) for kind, pattern, validate in _TABLE}
)


class Secrets:
    """Credentials of the given kinds (all of KINDS by default); each hit is labelled with its kind."""

    def __init__(self, kinds: Sequence[str] | None = None) -> None:
        if kinds is None:
            kinds = list(KINDS)
        if isinstance(kinds, str):
            raise ValueError("kinds must be a list of kind names, not one string")
        if not kinds:
            raise ValueError(f"no secret kinds given; known kinds: {', '.join(KINDS)}")
        for kind in kinds:
            if kind not in KINDS:
                raise ValueError(f"unknown secret kind {kind!r}; known kinds: {', '.join(KINDS)}")
        self._detectors = [KINDS[kind] for kind in dict.fromkeys(kinds)]
        self._window = max(detector.window for detector in self._detectors)
        self._plan = [(d, tuple((literal, _gate(literal)) for literal in TRIGGERS[d.kind])) for d in self._detectors]

    @property
    def window(self) -> int:
        return self._window

    @property
    def kinds(self) -> list[str]:
        return [detector.kind for detector in self._detectors]

    def scan(self, text: str) -> list[Hit]:
        triggered = self._triggered(text)
        if not triggered:
            return []
        deadline = deadline_for(text)
        hits: list[Hit] = []
        for detector in triggered:
            matches = find_all(detector.pattern, text, deadline)
            if matches is None:
                return timed_out(text, detector.kind)
            hits.extend(_hit(detector.kind, m) for m in matches if _valid(detector, m))
        return sorted(hits, key=lambda hit: (hit.start, -hit.end))

    def _triggered(self, text: str) -> list[Detector]:
        """The detectors one of whose trigger literals is in `text`. A literal holding "-", "_" or "/" is only
        looked for when that character is in the text at all (one memchr), which skips most of them in prose."""
        if not text:
            return []
        lowered = text.lower()
        open_gates = {"": True, "-": "-" in lowered, "_": "_" in lowered, "/": "/" in lowered}
        return [
            detector
            for detector, literals in self._plan
            if any(open_gates[gate] and literal in lowered for literal, gate in literals)
        ]


def _gate(literal: str) -> str:
    """The character of "-_/" a trigger literal holds ("" if none): rare in prose, so tested first."""
    return next((char for char in "-_/" if char in literal), "")


def _valid(detector: Detector, match: Any) -> bool:
    try:
        return detector.validate(match)
    except Exception:  # a validator bug must not break a request: the pattern matched, so report it
        return True


def _hit(kind: str, match: Any) -> Hit:
    """The span of the `value` group when the pattern has one, else of the whole match."""
    if "value" in match.re.groupindex:
        return Hit(match.start("value"), match.end("value"), kind)
    return Hit(match.start(), match.end(), kind)
