"""When the policy revision deciding requests changed, exactly, without sorting the whole period.

From each revision's first and last request (one cheap GROUP BY), a sweep finds where revisions follow one
another cleanly (the change is the new revision's first request) and the windows where two or more were in
use at once (a reload, a rollback): only those windows are read row by row, in time order, for the exact
switches. Switches less than SETTLE_MS apart (workers reloading one after another alternate between the old and
the new revision for a moment) make one change, reported with the number of switches and when it settled.
"""

from typing import Any

from gateway.audit.reads import Reader
from gateway.reports import queries
from gateway.reports.queries import Scope

SETTLE_MS = 60_000


def windows(seen: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[tuple[int, int]]]:
    """The clean changes (one revision ends before the next begins) and the windows of overlap [lo, hi]."""
    edges = sorted([(r["first_ms"], 0, r["revision"]) for r in seen] + [(r["last_ms"], 1, r["revision"]) for r in seen])
    active: set[str] = set()
    changes: list[dict[str, Any]] = []
    overlaps: list[tuple[int, int]] = []
    last_alone: str | None = None
    opened = 0
    for at, kind, revision in edges:
        if kind == 0:
            if not active and last_alone is not None and last_alone != revision:
                changes.append({"at_ms": at, "from": last_alone, "to": revision})
            active.add(revision)
            if len(active) == 2:
                opened = at
        else:
            active.discard(revision)
            if len(active) == 1 and opened:
                overlaps.append((opened, at))
                opened = 0
            if not active:
                last_alone = revision
    return changes, overlaps


def changes(reader: Reader, scope: Scope, seen: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every change of revision in the period, in time order: at, from, to, switches, settled_ms."""
    clean, overlaps = windows(seen)
    switches = list(clean)
    for lo, hi in overlaps:
        before = _in_force_before(seen, lo)
        found = queries.revision_switches(reader, scope, lo, hi)
        for switch in found:
            switch["from"] = switch["from"] or before
            before = switch["to"]
        switches.extend(s for s in found if s["from"] and s["from"] != s["to"])
    return _settle(sorted(switches, key=lambda s: s["at_ms"]))


def _in_force_before(seen: list[dict[str, Any]], moment: int) -> str:
    """The revision of the last request before `moment` as far as first/last times tell (the one seen last)."""
    earlier = [r for r in seen if r["first_ms"] < moment]
    return max(earlier, key=lambda r: min(r["last_ms"], moment))["revision"] if earlier else ""


def _settle(switches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    merged: list[dict[str, Any]] = []
    for switch in switches:
        if merged and switch["at_ms"] - merged[-1]["settled_ms"] < SETTLE_MS:
            merged[-1].update(to=switch["to"], settled_ms=switch["at_ms"], switches=merged[-1]["switches"] + 1)
        else:
            merged.append({**switch, "switches": 1, "settled_ms": switch["at_ms"]})
    return merged
