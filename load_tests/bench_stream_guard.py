"""Microbenchmark: what the streaming output guard costs per SSE chunk.

A realistic chat stream (N content chunks of 4-20 characters, as OpenAI sends them, one event per network
chunk, then the finish chunk, the usage chunk and [DONE]) is run through
    (a) no guard (the bare async iteration),
    (a') a StreamGuard with two block rules whose checks find nothing at once (the guard's own cost:
         SSE framing, JSON parse, text slots, carry-over),
    (b) a StreamGuard with a 20-term denied-terms block rule and a secrets-like regex block rule,
    (c) the same rules with action redact (text held back, every text event re-serialised),
    (d) as (c), with a term or a secret in about one chunk in fifty (redactions happen),
    (e) the same rules with action warn on the stream of (d): no text held back, so an event whose text ends
        in a match (tentative: the next text may extend it into a longer word) is held until the next one,
and the median time per chunk over several runs is printed. The checks are gateway.guardrails.text's
`Terms` and `Patterns` when that module is there, else (or with --inline) equivalent plain `regex`
checks, which separates the guard's own cost from the checks'.

    .venv/bin/python -m load_tests.bench_stream_guard [--chunks 2000] [--runs 9] [--inline]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import regex

from gateway.guardrails.base import Action, Finding, Hit, TextCheck, TextRule
from gateway.guardrails.stream import StreamGuard
from load_tests import mock_wire as wire

TERMS = [
    "project titan", "codename bluebird", "merger", "acquisition target", "layoffs", "salary band",
    "internal only", "confidential", "do not distribute", "trade secret", "board minutes", "earnings leak",
    "customer list", "source code", "root password", "private key", "insider", "embargoed", "lawsuit", "whistleblower",
]  # fmt: skip
SECRETS = [r"sk-[A-Za-z0-9_-]{20,64}", r"AKIA[0-9A-Z]{16}", r"ghp_[A-Za-z0-9]{36}"]
WORDS = (
    "the of and to in is was for on that with as by at from this be are or an it not which have has were "
    "model answer stream request token gateway policy latency server client network response system data "
    "value result question example number people between important different following however because"
).split()
HEAD = {"id": "chatcmpl-bench", "created": 1700000000, "model": "gpt-4o-mini"}


@dataclass(frozen=True)
class _RegexCheck:
    """Fallback check: one compiled alternation, window given."""

    pattern: regex.Pattern[str]
    width: int

    @property
    def window(self) -> int:
        return self.width

    def scan(self, text: str) -> list[Hit]:
        return [Hit(m.start(), m.end(), "match") for m in self.pattern.finditer(text)]


def checks(inline: bool) -> tuple[TextCheck, TextCheck, str]:
    """(terms check, secrets check, where they come from): the gateway's Terms and Secrets (all kinds, the
    baseline policy's rule), or plain inline regexes."""
    try:
        from gateway.guardrails.credentials import Secrets
        from gateway.guardrails.text import Terms
    except ImportError:
        inline = True
    if inline:
        terms = regex.compile("|".join(regex.escape(t) for t in TERMS), regex.IGNORECASE)
        secrets = regex.compile("|".join(SECRETS))
        return _RegexCheck(terms, max(map(len, TERMS))), _RegexCheck(secrets, 64), "inline regex"
    return Terms(TERMS), Secrets(), "gateway.guardrails.text.Terms + credentials.Secrets"


@dataclass(frozen=True)
class _NoCheck:
    """A check that finds nothing, at no cost: what the guard costs around its checks."""

    window: int = 64

    def scan(self, text: str) -> list[Hit]:
        return []


def noop_rules() -> list[TextRule]:
    return [TextRule("bench", f"noop-{n}", "block", "finds nothing", _NoCheck()) for n in (1, 2)]


def rules(action: Action, inline: bool) -> list[TextRule]:
    terms, secrets, _ = checks(inline)
    return [
        TextRule("bench", "denied-terms", action, "denied term", terms),
        TextRule("bench", "secrets", action, "secret", secrets),
    ]


def pieces(count: int, rng: random.Random, dirty: bool) -> list[str]:
    """`count` deltas of 4-20 characters of plain text; with `dirty`, about one in fifty holds a term or key."""
    out: list[str] = []
    text = ""
    while len(out) < count:
        while len(text) < 40:
            if dirty and rng.random() < 0.02:
                text += rng.choice([f" {rng.choice(TERMS)}", " sk-" + "a1B2c3D4e5" * 3])
            text += " " + rng.choice(WORDS)
        size = rng.randint(4, 20)
        out.append(text[:size])
        text = text[size:]
    return out


def stream(deltas: list[str]) -> list[bytes]:
    """The SSE events of a chat stream with these deltas, one per network chunk."""
    chunks = [{"content": d} for d in deltas]
    chunks[0] = {"role": "assistant", **chunks[0]}
    return list(wire.chat_chunks(HEAD, chunks, "stop", wire.chat_usage(10, len(deltas))))


async def source(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def drain(chunks: list[bytes], guard: StreamGuard | None) -> int:
    body = source(chunks) if guard is None else guard.run(source(chunks))
    size = 0
    async for piece in body:
        size += len(piece)
    return size


def blocked(finding: Finding) -> bytes:
    return b"data: blocked\n\n"


async def per_chunk_us(chunks: list[bytes], checked: list[TextRule] | None, runs: int) -> float:
    """Median µs per chunk over `runs` runs (a fresh guard each run, as each request gets one; None: no guard)."""
    times: list[float] = []
    findings: list[Finding] = []
    for _ in range(runs):
        guard = None if checked is None else StreamGuard("chat/completions", checked, findings.append, blocked)
        start = time.perf_counter()
        await drain(chunks, guard)
        times.append((time.perf_counter() - start) / len(chunks) * 1e6)
    return statistics.median(times)


async def main(count: int, runs: int, inline: bool) -> None:
    rng = random.Random(7)
    clean = stream(pieces(count, rng, dirty=False))
    dirty = stream(pieces(count, rng, dirty=True))
    cases: list[tuple[str, list[bytes], list[TextRule] | None]] = [
        ("(a) no guard", clean, None),
        ("(a') guard, no-op checks", clean, noop_rules()),
        ("(b) block: 20 terms + secrets", clean, rules("block", inline)),
        ("(c) redact: same rules, no match", clean, rules("redact", inline)),
        ("(d) redact: ~2% of chunks match", dirty, rules("redact", inline)),
        ("(e) warn: ~2% of chunks match", dirty, rules("warn", inline)),
    ]
    await per_chunk_us(clean, rules("redact", inline), 2)  # warm up (imports, regex caches)
    print(f"{count} content chunks per stream, median of {runs} runs, checks from {checks(inline)[2]}\n")
    print(f"| {'case':<38} | µs/chunk | overhead µs/chunk |")
    print(f"|{'-' * 40}|---------:|------------------:|")
    baseline = None
    for name, chunks, checked in cases:
        value = await per_chunk_us(chunks, checked, runs)
        baseline = value if baseline is None else baseline
        print(f"| {name:<38} | {value:8.2f} | {value - baseline:17.2f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--inline", action="store_true", help="plain inline regex checks, not Terms/Patterns")
    args = parser.parse_args()
    asyncio.run(main(args.chunks, args.runs, args.inline))
