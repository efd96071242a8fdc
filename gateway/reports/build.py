"""Building the compliance report: the steps that read the audit store, in order, with progress on stderr.

    build(context, progress) -> Report

Each step runs its queries (gateway.reports.queries) and turns the answers into sections; what one step finds
that a later one needs (the traffic totals, the keys of a team) is kept in `Context.found`. `Progress` prints
one line per step, `[3/9] PII detections… 0.4 s`, when it is enabled (stderr is a terminal, or --progress).
"""

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import urlparse

from gateway.audit.reads import Reader
from gateway.auth.keys import KeyRecord
from gateway.policy.compiled import PolicySet
from gateway.reports import integrity, sections, spend
from gateway.reports.model import Report, Section, iso_moment
from gateway.reports.queries import Scope
from gateway.settings import Settings

ORDER = (
    "period",
    "policies",
    "requests",
    "decisions",
    "pii",
    "spend",
    "failures",
    "coverage",
    "verification",
    "retention",
)
VERIFY_MODES = ("full", "checkpoints", "skip")


@dataclass
class Context:
    """What the steps read: the store, the period, the configuration, and what earlier steps found."""

    reader: Reader
    scope: Scope
    settings: Settings
    policies: PolicySet | None
    policy_problem: str | None
    keys: tuple[KeyRecord, ...]
    trusted_keys: dict[str, bytes]
    verify: str = "full"
    found: dict[str, Any] = field(default_factory=dict)


Step = tuple[str, Callable[[Context], list[Section]]]
STEPS: tuple[Step, ...] = (
    ("Requests by team, key and model", sections.requests),
    ("Policies and revisions", sections.policies),
    ("Blocked and warned requests", sections.decisions),
    ("PII detections", sections.pii),
    ("Spend against budgets", spend.section),
    ("Failed and degraded requests", sections.failures),
    ("Audit coverage", integrity.coverage),
    ("Chain verification", integrity.verification),
    ("Retention", integrity.retention),
)


class Progress:
    """`[n/total] step… seconds` on a stream, when enabled."""

    def __init__(self, enabled: bool, stream: TextIO | None = None) -> None:
        self.enabled = enabled
        self.stream = stream or sys.stderr

    @classmethod
    def auto(cls, forced: bool) -> "Progress":
        return cls(forced or sys.stderr.isatty())

    def step(self, number: int, total: int, title: str, seconds: float) -> None:
        if self.enabled:
            print(f"[{number}/{total}] {title}… {seconds:.1f} s", file=self.stream, flush=True)


def build(context: Context, progress: Progress | None = None) -> Report:
    """Run every step and assemble the report."""
    progress = progress or Progress(False)
    found: dict[str, Section] = {}
    for number, (title, step) in enumerate(STEPS, 1):
        started = time.perf_counter()
        for section in step(context):
            found[section.id] = section
        progress.step(number, len(STEPS), title, time.perf_counter() - started)
    scope = context.scope
    return Report(
        title="AI gateway compliance report" + (f": team {scope.team}" if scope.team else ""),
        start=iso_moment(scope.start),
        end=iso_moment(scope.end),
        generated_at=iso_moment(datetime.now(UTC)),
        filters={"team": scope.team},
        source=source(context.settings),
        sections=tuple(found[name] for name in ORDER if name in found),
    )


def source(settings: Settings) -> dict[str, str]:
    """Where the data came from, without credentials."""
    url = settings.audit_url or ""
    parsed = urlparse(url)
    store = f"{parsed.scheme}://{parsed.hostname or ''}{f':{parsed.port}' if parsed.port else ''}{parsed.path}"
    database = settings.audit.database if settings.audit is not None else ""
    return {"config": settings.source, "store": store, "database": database}
