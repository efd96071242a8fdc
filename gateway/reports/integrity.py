"""The report's sections about the audit trail itself: coverage, chain verification, retention.

Coverage: the audit rows are the only record of the requests, so the question is whether the rows of the
period are all there and all signed: per hash chain, the seq range the period's rows span must hold every seq
once (none missing, none repeated) and be closed by a signed checkpoint.

Verification, three modes (`--verify`):
    full         the audit store's own verification of the period (gateway.audit.store.AuditStore.verify):
                 every row of the stretch rehashed, every checkpoint's signature checked. Reads every row:
                 minutes for tens of millions of rows.
    checkpoints  the checkpoints covering the period: each signed by a trusted key, each naming the stored
                 hash of its row, together covering every seq of the range. Rows are not rehashed, so an
                 altered column goes unseen; a deleted, inserted or re-chained row does not.
    skip         not run (the report says so).
"""

import re
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from gateway.audit.chain import checkpoint_message, verify_signature
from gateway.audit.schema import CHECKPOINTS, EVENTS
from gateway.reports import queries
from gateway.reports.model import Column, Fact, Section, Status, Table, iso

if TYPE_CHECKING:
    from gateway.reports.build import Context

_TTL_DAYS = re.compile(r"\bTTL\b.*?toIntervalDay\((\d+)\)")


def coverage(ctx: "Context") -> list[Section]:
    chains = queries.coverage(ctx.reader, ctx.scope)
    ctx.found["coverage"] = chains
    gaps = [
        {"chain": c["chain"], **gap}
        for c in chains
        if c["missing_seqs"]
        for gap in queries.gaps(ctx.reader, ctx.scope, c["chain"], c["first_seq"], c["last_seq"])
    ]
    unsigned = [c for c in chains if c["closing_checkpoint"] is None]
    broken = any(c["missing_seqs"] or c["repeated_seqs"] for c in chains)
    rows = sum(c["rows"] for c in chains)
    requests = ctx.found["traffic"]["totals"]["requests"]
    table = Table(
        "chains",
        "Audit rows of the period, per hash chain",
        (
            Column("chain", "Chain"),
            Column("rows", "Rows in period", "int"),
            Column("first_seq", "First seq", "int"),
            Column("last_seq", "Last seq", "int"),
            Column("range_rows", "Rows in that seq range", "int"),
            Column("missing_seqs", "Missing seqs", "int"),
            Column("repeated_seqs", "Repeated seqs", "int"),
            Column("checkpoints", "Checkpoints in range", "int"),
            Column("closing_checkpoint", "Closing checkpoint", "int"),
            Column("signing_keys", "Signing keys"),
        ),
        tuple(
            (
                c["chain"] or "(default)",
                c["rows"],
                c["first_seq"],
                c["last_seq"],
                c["range_rows"],
                c["missing_seqs"],
                c["repeated_seqs"],
                c["checkpoints"],
                c["closing_checkpoint"],
                ", ".join(c["signing_keys"]),
            )
            for c in chains
        ),
        "A chain is one sequence for all teams: its seq range in the period also holds other teams' rows and "
        "rows whose request started just outside the period.",
    )
    gap_table = Table(
        "gaps",
        "Missing seq ranges (first 10 per chain)",
        (Column("chain", "Chain"), Column("from_seq", "From seq", "int"), Column("to_seq", "To seq", "int")),
        tuple((g["chain"], g["from_seq"], g["to_seq"]) for g in gaps),
    )
    facts = (
        Fact("audit_rows", "Audit rows in the period", rows, "int"),
        Fact("requests", "Requests (rows that are not budget events)", requests, "int"),
        Fact("chains", "Hash chains", len(chains), "int"),
        Fact("missing_seqs", "Missing seqs", sum(c["missing_seqs"] for c in chains), "int"),
        Fact("repeated_seqs", "Repeated seqs", sum(c["repeated_seqs"] for c in chains), "int"),
        Fact("unsigned_chains", "Chains whose last rows are not signed yet", len(unsigned), "int"),
        Fact("complete", "Complete", not broken and not unsigned, "bool"),
    )
    if broken:
        summary = "Rows are missing or repeated in the chain: see the gaps and the verification below."
    elif unsigned:
        summary = "No row is missing; the newest rows of a chain are not under a signed checkpoint yet."
    else:
        summary = f"All {rows:,} audit rows of the period are in unbroken, signed chains."
    status: Status = "attention" if broken or unsigned else "ok"
    return [Section("coverage", "Audit coverage", status, summary, facts, (table, gap_table))]


def verification(ctx: "Context") -> list[Section]:
    started = time.perf_counter()
    if ctx.verify == "skip":
        skipped = (Fact("mode", "Mode", "skip"), Fact("ok", "Verified", None, "bool"))
        return [Section("verification", "Chain verification", "attention", "Not run (--verify skip).", skipped)]
    if ctx.verify == "checkpoints":
        ok, rows, signed, problem = _checkpoints(ctx)
    else:
        result = ctx.reader.verify(ctx.scope.start, ctx.scope.end)
        ok, rows, signed, problem = result.ok, result.rows_checked, result.checkpoints_checked, result.first_problem
    seconds = round(time.perf_counter() - started, 3)
    facts = (
        Fact("mode", "Mode", ctx.verify),
        Fact("ok", "Verified", ok, "bool"),
        Fact("rows_checked", "Rows rehashed", rows, "int"),
        Fact("checkpoints_checked", "Signed checkpoints checked", signed, "int"),
        Fact("first_problem", "First problem", problem or "none"),
        Fact("seconds", "Seconds", seconds),
    )
    if not ok:
        summary = f"FAILED: {problem}"
    elif ctx.verify == "full":
        summary = f"OK: {rows:,} rows rehashed and {signed:,} signed checkpoints checked."
    else:
        summary = f"OK: {signed:,} signed checkpoints cover the period's rows (rows not rehashed)."
    return [Section("verification", "Chain verification", "ok" if ok else "attention", summary, facts)]


def _checkpoints(ctx: "Context") -> tuple[bool, int, int, str | None]:
    """The checkpoint-only check of every chain of the period: (ok, rows, checkpoints checked, first problem)."""
    checked = 0
    for chain in ctx.found["coverage"]:
        lo, hi, name = chain["first_seq"], chain["last_seq"], chain["chain"]
        position = lo
        for seq, chash, rows, created_ms, key_id, signature, cp_chain, stored in queries.checkpoints(
            ctx.reader, ctx.scope, name, lo, hi
        ):
            where = f"chain {name!r}: checkpoint at seq {seq}" if name else f"checkpoint at seq {seq}"
            if stored != chash:
                return False, 0, checked, f"{where} names a row whose stored hash differs or which is missing"
            pem = ctx.trusted_keys.get(key_id)
            if pem is None:
                return False, 0, checked, f"{where} is signed by key {key_id!r}, which is not a trusted public key"
            created = datetime.fromtimestamp(created_ms / 1000, UTC)
            if not verify_signature(pem, checkpoint_message(seq, chash, rows, created, cp_chain), signature):
                return False, 0, checked, f"{where} has a bad signature"
            if seq - rows + 1 > position:
                return False, 0, checked, f"seq {position}..{seq - rows} of chain {name!r} are under no checkpoint"
            position, checked = max(position, seq + 1), checked + 1
        if position <= hi:
            return False, 0, checked, f"seq {position}..{hi} of chain {name!r} are under no signed checkpoint"
    return True, 0, checked, None


def _ttl(tables: dict[str, Any], table: str) -> int | None:
    entry = tables.get(table) or {}
    if entry.get("engine") == "Distributed":
        entry = tables.get(f"{table}_local") or {}
    found = _TTL_DAYS.search(entry.get("engine_full", ""))
    return int(found.group(1)) if found else None


def retention(ctx: "Context") -> list[Section]:
    found = queries.retention(ctx.reader, ctx.scope)
    audit = ctx.settings.audit
    days = audit.retention_days if audit is not None else None
    events_ttl, checkpoints_ttl = _ttl(found["tables"], EVENTS), _ttl(found["tables"], CHECKPOINTS)
    horizon = datetime.now(UTC) - timedelta(days=days) if days else None
    bodies = bool(audit is not None and audit.bodies)
    facts = (
        Fact("retention_days", "Retention configured (audit.retention_days)", days, "int"),
        Fact("events_ttl_days", "TTL of audit_events in ClickHouse (days)", events_ttl, "int"),
        Fact("checkpoints_ttl_days", "TTL of audit_checkpoints in ClickHouse (days)", checkpoints_ttl, "int"),
        Fact(
            "horizon",
            "Rows older than this are dropped",
            horizon.strftime("%Y-%m-%dT%H:%M:%SZ") if horizon else None,
            "time",
        ),
        Fact("oldest_row", "Oldest row kept", iso(found["oldest_ms"]), "time"),
        Fact("bodies_stored", "Bodies stored (audit.bodies)", bodies, "bool"),
        Fact("rows_with_body", "Rows of the period with a stored body", found["rows_with_body"], "int"),
    )
    consistent = events_ttl == days and checkpoints_ttl == days
    summary = f"Rows are kept {days} days" + (
        " (the tables' TTL agrees)." if consistent else f"; the tables' TTL says {events_ttl} / {checkpoints_ttl} days."
    )
    summary += " Request and answer bodies are stored, encrypted per team." if bodies else " No bodies are stored."
    return [Section("retention", "Retention", "ok" if consistent else "attention", summary, facts)]
