"""Shared pieces of the PII benchmark (`python -m load_tests.bench_pii`): its constants, the four 1 KB
prompts and the throughput mix, the gateway variants, the run context `Ctx`, the number-formatting helpers and
the CPU and quiet-machine helpers that both the in-process analyzer section and the HTTP gateway section use.
The other `bench_pii*` modules import this one; it imports none of them, so there is no import cycle.
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.settings import PiiSettings
from load_tests import bench_procs as procs
from load_tests.bench_cpu import CpuWindow, process_cpu
from load_tests.bench_report import NOISY_CPU

REPO = Path(__file__).resolve().parent.parent
SERVER_CORE, LOAD_CORE = 0, 1
UPSTREAM_KEY = "sk-mock"
CHAT_PATH = "/v1/chat/completions"
NER_MODEL = PiiSettings().spacy_model
THRESHOLD = 0.35  # a pii rule's default score_threshold
PROMPT_CHARS = 1024
CONCURRENCY = 16
QUIET_CPU = 10.0

PATTERN_ENTITIES = ("EMAIL_ADDRESS", "PHONE_NUMBER", "IBAN_CODE", "CREDIT_CARD", "US_SSN", "IP_ADDRESS")
ALL_ENTITIES = (*PATTERN_ENTITIES, "PERSON", "LOCATION")
ACTIONS = {
    "EMAIL_ADDRESS": "pseudonymise",
    "PHONE_NUMBER": "pseudonymise",
    "IBAN_CODE": "pseudonymise",
    "CREDIT_CARD": "mask",
    "US_SSN": "mask",
    "IP_ADDRESS": "mask",
    "PERSON": "pseudonymise",
    "LOCATION": "mask",
}

EMAIL, PHONE, IBAN = "billing.team@example.com", "+1 415-555-0132", "DE89370400440532013000"
NAME, CITY = "Alice Martin", "Paris"  # en_core_web_sm misses some cities (Lyon); Paris it tags
ENTITY_OF = {EMAIL: "EMAIL_ADDRESS", PHONE: "PHONE_NUMBER", IBAN: "IBAN_CODE", NAME: "PERSON", CITY: "LOCATION"}
FILLER = (
    "The quarterly planning review covers the roadmap for the next two releases. "
    "Our team wants a short summary of the open risks, the dependencies between the services, and the work "
    "that can move to the following quarter. "
    "Please keep the tone neutral and avoid jargon, since the summary goes to a wide audience. "
    "We also need a list of questions to ask during the review, ordered by importance. "
    "Finally, suggest how we could measure progress without adding more meetings to the calendar. "
)


def prompt(lead: str) -> str:
    """`lead`, then English filler, cut to PROMPT_CHARS characters (ASCII: 1 KB)."""
    text = lead
    while len(text) < PROMPT_CHARS:
        text += FILLER
    return text[:PROMPT_CHARS]


# kind → (label, text); the PII sits in the first 16 words, so the mock's cut echo carries it back.
PROMPTS: dict[str, tuple[str, str]] = {
    "lower": ("1 KB lowercase, no PII", prompt("").lower()),
    "english": ("1 KB English, no PII", prompt("")),
    "pattern": (
        "1 KB with pattern PII",
        prompt(f"Please send the invoice to {EMAIL} or call {PHONE}; pay to {IBAN}. "),
    ),
    "ner": ("1 KB with NER PII", prompt(f"My colleague {NAME} will present the plan at our office in {CITY}. ")),
}
# The throughput mix: 20 % PII (half pattern, half NER), the rest English without PII.
MIX = ["pattern", "english", "english", "english", "english", "ner", "english", "english", "english", "english"]


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    pii_rule: bool
    spacy_model: str | None = NER_MODEL


VARIANTS = {
    "off": Variant("off", "PII off", pii_rule=False),
    "ner": Variant("ner", "PII on, NER", pii_rule=True),
    "patterns": Variant("patterns", "PII on, patterns only", pii_rule=True, spacy_model=None),
}


@dataclass
class Ctx:
    args: argparse.Namespace
    work: Path
    servers: list[procs.Server] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (NaN if empty)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def num(value: float, digits: int = 2) -> str:
    return "-" if value != value else f"{value:.{digits}f}"


def delta(value: float, base: float) -> str:
    return "-" if value != value or base != base else f"{value - base:+.2f}"


def ratio(a: float, b: float) -> float:
    return a / b if b and b == b and a == a else float("nan")


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def group_cpu(pids: list[int]) -> float:
    return sum(process_cpu(pid) for pid in pids)


def wait_quiet(ctx: Ctx, pids: list[int]) -> None:
    """Wait (at most --quiet-timeout s) until processes outside the benchmark leave the CPU alone."""
    deadline = time.monotonic() + ctx.args.quiet_timeout
    while time.monotonic() < deadline:
        window = CpuWindow(pids)
        time.sleep(0.5)
        if window.foreign_percent() < QUIET_CPU:
            return


def least_disturbed(ctx: Ctx, pids: list[int], once: Callable[[], Any]) -> Any:
    """`once()` (a result with `foreign_cpu`) after waiting for quiet, re-run at most --retries times while
    other processes disturbed it; the least disturbed result."""
    tries = []
    for _ in range(1 + max(0, ctx.args.retries)):
        wait_quiet(ctx, pids)
        tries.append(once())
        if tries[-1].foreign_cpu <= NOISY_CPU:
            break
    return min(tries, key=lambda r: r.foreign_cpu)
