"""The compliance report's SQL: one function per section, each returning plain data (dicts, lists, numbers).

Every statement goes through a Reader (gateway.audit.reads), so it runs the same with the gateway stopped
(the embedded engine in this process) and while it runs (through the shipper's socket), and it is plain
ClickHouse SQL with `{name:Type}` parameters, so it runs unchanged on a ClickHouse server. Times come back as
epoch milliseconds (`toUnixTimestamp64Milli`), never as engine-dependent datetime values.

A "request" is a row that is not a budget threshold event (route `gateway/budget_threshold`, recorded by the
limits stage when a soft threshold is crossed): those are counted apart, in the spend section.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.audit.chain import epoch_ms
from gateway.audit.reads import Reader
from gateway.audit.schema import CHECKPOINTS, EVENTS, check_database

ALERT_ROUTE = "gateway/budget_threshold"
STATUS_CLASSES = (  # (name, condition on `status`)
    ("ok", "status BETWEEN 200 AND 399"),
    ("client_error", "status BETWEEN 400 AND 499 AND status != 429"),
    ("limited", "status = 429"),
    ("server_error", "status >= 500"),
    ("no_status", "status = 0"),
)
_CLASSES = ", ".join(f"countIf({condition}) AS {name}" for name, condition in STATUS_CLASSES)
_USAGE = "sum(tokens_in) AS tokens_in, sum(tokens_out) AS tokens_out, sum(cost_micro_usd) AS cost_micro_usd"
TOP = 500  # the most rows a table of keys, models or failures keeps (the rest are summed into the totals)


@dataclass(frozen=True)
class Scope:
    """What a report covers: [start, end) in UTC, optionally one team, in the audit database `database`."""

    database: str
    start: datetime
    end: datetime
    team: str | None = None

    @property
    def events(self) -> str:
        return f"{check_database(self.database)}.{EVENTS}"

    @property
    def checkpoints(self) -> str:
        return f"{check_database(self.database)}.{CHECKPOINTS}"

    def where(self, requests: bool = True) -> str:
        """The period (and team) filter; `requests`: leave the budget threshold events out."""
        where = "ts >= fromUnixTimestamp64Milli({start:Int64}) AND ts < fromUnixTimestamp64Milli({end:Int64})"
        if self.team is not None:
            where += " AND team = {team:String}"
        return where + (" AND route != {alert:String}" if requests else "")

    def parameters(self, **extra: Any) -> dict[str, Any]:
        named = {"start": epoch_ms(self.start), "end": epoch_ms(self.end), "alert": ALERT_ROUTE, **extra}
        if self.team is not None:
            named["team"] = self.team
        return named


def _dicts(names: Sequence[str], rows: list[list[Any]]) -> list[dict[str, Any]]:
    return [dict(zip(names, row, strict=True)) for row in rows]


def _select(reader: Reader, scope: Scope, sql: str, names: Sequence[str], **extra: Any) -> list[dict[str, Any]]:
    """Run `sql` (with {events}, {checkpoints} and {where} filled in) and name the columns of its rows."""
    text = sql.replace("{events}", scope.events).replace("{checkpoints}", scope.checkpoints)
    text = text.replace("{where}", scope.where())
    return _dicts(names, reader.select(text, scope.parameters(**extra)))


COUNT_NAMES = ("requests", *(name for name, _ in STATUS_CLASSES), "tokens_in", "tokens_out", "cost_micro_usd")
_SETS = {7: "by_team", 3: "by_key", 13: "by_model", 14: "by_day", 15: "totals"}  # grouping() → set


def traffic(reader: Reader, scope: Scope) -> dict[str, Any]:
    """Requests by status class, tokens and cost: in total, by team, by key, by model and by UTC day (one scan)."""
    sql = (
        f"SELECT grouping(team, key_id, model_requested, day), team, key_id, any(key_name), model_requested, "
        f"toDate(ts) AS day, count(), {_CLASSES}, {_USAGE}, toUnixTimestamp64Milli(min(ts)), "
        "toUnixTimestamp64Milli(max(ts)) FROM {events} WHERE {where} "
        "GROUP BY GROUPING SETS ((team), (team, key_id), (model_requested), (day), ()) "
        "SETTINGS force_grouping_standard_compatibility = 1"
    )
    names = ("set", "team", "key_id", "key_name", "model", "day", *COUNT_NAMES, "first_ms", "last_ms")
    found: dict[str, list[dict[str, Any]]] = {name: [] for name in _SETS.values()}
    for row in _select(reader, scope, sql, names):
        found[_SETS[row.pop("set")]].append(row)
    empty = dict.fromkeys(COUNT_NAMES, 0)
    totals = found["totals"][0] if found["totals"] and found["totals"][0]["requests"] else {**empty}
    result: dict[str, Any] = {"totals": {k: totals.get(k) for k in (*COUNT_NAMES, "first_ms", "last_ms")}}
    keep = {"by_team": ("team",), "by_key": ("team", "key_id", "key_name"), "by_model": ("model",), "by_day": ("day",)}
    for name, columns in keep.items():
        rows = [{c: row[c] for c in (*columns, *COUNT_NAMES)} for row in found[name]]
        result[name] = sorted(rows, key=lambda r: tuple(r[c] for c in columns))
    result["by_key"].sort(key=lambda r: (-r["requests"], r["team"], r["key_id"]))
    result["by_model"].sort(key=lambda r: (-r["requests"], r["model"]))
    return result


def revisions(reader: Reader, scope: Scope) -> list[dict[str, Any]]:
    """The policy revisions that decided requests in the period: first and last seen, requests."""
    sql = (
        "SELECT policy_revision, toUnixTimestamp64Milli(min(ts)), toUnixTimestamp64Milli(max(ts)), count() "
        "FROM {events} WHERE {where} AND policy_revision != '' GROUP BY policy_revision ORDER BY min(ts)"
    )
    return _select(reader, scope, sql, ("revision", "first_ms", "last_ms", "requests"))


def revision_switches(reader: Reader, scope: Scope, start_ms: int, end_ms: int) -> list[dict[str, Any]]:
    """The requests in [start_ms, end_ms] (and the first one after) decided by another revision than the request
    before them, by time then seq; the first one's `from` is "" (revisions.py asks only for the windows where
    two revisions were both in use, so this sorts few rows)."""
    after = (
        "(SELECT min(ts) FROM {events} WHERE {where} AND policy_revision != '' "
        "AND ts > fromUnixTimestamp64Milli({hi:Int64}))"
    )
    sql = (
        "SELECT at, previous, revision FROM (SELECT toUnixTimestamp64Milli(ts) AS at, policy_revision AS revision, "
        "lagInFrame(policy_revision) OVER (ORDER BY ts, seq ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS previous "
        "FROM {events} WHERE {where} AND policy_revision != '' AND ts >= fromUnixTimestamp64Milli({lo:Int64}) "
        f"AND (ts <= fromUnixTimestamp64Milli({{hi:Int64}}) OR ts = {after})) WHERE previous != revision ORDER BY at"
    )
    return _select(reader, scope, sql, ("at_ms", "from", "to"), lo=start_ms, hi=end_ms)


def decisions(reader: Reader, scope: Scope) -> list[dict[str, Any]]:
    """Requests per policy rule and action (block, warn, shadow, redact): a request counts once per rule and
    action however often the rule fired on it (input and output); `fired` counts every firing."""
    sql = (
        "SELECT p, r, k, a, countIf(u = 1), count() FROM {events} ARRAY JOIN decisions.policy AS p, "
        "decisions.rule AS r, decisions.kind AS k, decisions.action AS a, "
        "arrayEnumerateUniq(decisions.policy, decisions.rule, decisions.action) AS u "
        "WHERE {where} GROUP BY p, r, k, a ORDER BY a, countIf(u = 1) DESC, p, r"
    )
    return _select(reader, scope, sql, ("policy", "rule", "kind", "action", "requests", "fired"))


def pii(reader: Reader, scope: Scope) -> list[dict[str, Any]]:
    """PII detections per entity type and action: detections (the counts summed) and requests."""
    sql = (
        "SELECT p.entity, p.action, sum(p.count), count() FROM {events} ARRAY JOIN pii AS p WHERE {where} "
        "GROUP BY p.entity, p.action ORDER BY sum(p.count) DESC, p.entity, p.action"
    )
    return _select(reader, scope, sql, ("entity", "action", "detections", "requests"))


def outcomes(reader: Reader, scope: Scope) -> list[dict[str, Any]]:
    """Requests by model, deployment, status, error, whether retried (attempts > 1) and whether the client went
    away: few groups, from which the failures and degraded requests are counted (sections.failures)."""
    sql = (
        "SELECT model_requested, deployment, status, error_type, error_code, attempts > 1 AS retried, "
        "client_disconnected, count() FROM {events} WHERE {where} GROUP BY model_requested, deployment, status, "
        "error_type, error_code, retried, client_disconnected"
    )
    names = ("model", "deployment", "status", "error_type", "error_code", "retried", "client_disconnected", "requests")
    rows = _select(reader, scope, sql, names)
    for row in rows:
        row["retried"], row["client_disconnected"] = bool(row["retried"]), bool(row["client_disconnected"])
    return rows


def budget_usage(
    reader: Reader, scope: Scope, timezone: str, rules: Sequence[tuple[str, str]], users: bool = False
) -> list[dict[str, Any]]:
    """Cost and requests per local day (in `timezone`, the budgets' calendar), team, key, model, route (and end
    user, with `users`), and per budget rule (policy, rule) the requests it refused: what every budget rule's
    spend is summed from (spend.py), in one scan."""
    if not re.fullmatch(r"[A-Za-z0-9_+\-/]+", timezone):
        raise ValueError(f"not a time zone name: {timezone!r}")
    refused = "".join(
        f", countIf(status = 429 AND arrayExists((p, r, a) -> p = {{p{n}:String}} AND r = {{r{n}:String}} "
        f"AND a = 'block', decisions.policy, decisions.rule, decisions.action))"
        for n in range(len(rules))
    )
    keys = "day, team, key_id, model_requested, route" + (", end_user" if users else "")
    sql = (
        f"SELECT toDate(ts, '{timezone}') AS day, team, key_id, model_requested, route"
        f"{', end_user' if users else ''}, sum(cost_micro_usd), count(){refused} FROM {{events}} WHERE {{where}} "
        f"GROUP BY {keys}"
    )
    named = {f"p{n}": policy for n, (policy, _) in enumerate(rules)} | {f"r{n}": r for n, (_, r) in enumerate(rules)}
    names = ["day", "team", "key", "model", "route", *(["user"] if users else []), "spent_micro_usd", "requests"]
    names += [f"refused_{n}" for n in range(len(rules))]
    return _select(reader, scope, sql, names, **named)


def threshold_events(reader: Reader, scope: Scope, team_keys: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The soft budget thresholds crossed in the period (with a team: those whose scope names the team or one
    of its keys, `team_keys`)."""
    where = (
        "ts >= fromUnixTimestamp64Milli({start:Int64}) AND ts < fromUnixTimestamp64Milli({end:Int64}) "
        "AND route = {alert:String}"
    )
    if scope.team is not None:
        where += (
            " AND (position(decisions[1].detail, concat('team=', encodeURLComponent({team:String}))) > 0 "
            "OR arrayExists(k -> position(decisions[1].detail, concat('key=', k)) > 0, {keys:Array(String)}))"
        )
    sql = (
        "SELECT toUnixTimestamp64Milli(ts), decisions[1].policy, decisions[1].rule, decisions[1].detail "
        f"FROM {scope.events} WHERE {where} ORDER BY ts LIMIT {TOP}"
    )
    rows = reader.select(sql, scope.parameters(keys=list(team_keys)))
    return _dicts(("at_ms", "policy", "rule", "detail"), rows)


def coverage(reader: Reader, scope: Scope) -> list[dict[str, Any]]:
    """Per hash chain: the rows of the period, the seq range they span, what that range holds in all (rows of
    every team and time: a chain is one sequence), the seqs missing or repeated in it, and its checkpoints."""
    spans = _dicts(
        ("chain", "rows", "first_seq", "last_seq"),
        reader.select(
            f"SELECT chain, count(), min(seq), max(seq) FROM {scope.events} WHERE {scope.where(requests=False)} "
            "GROUP BY chain ORDER BY chain",
            scope.parameters(),
        ),
    )
    for span in spans:
        held = (
            f"SELECT count(), groupBitmap(seq) FROM {scope.events} WHERE chain = {{chain:String}} "
            "AND seq BETWEEN {lo:UInt64} AND {hi:UInt64}"
        )
        bounds = {"chain": span["chain"], "lo": span["first_seq"], "hi": span["last_seq"]}
        span["range_rows"], seqs = reader.select(held, bounds)[0]
        span["missing_seqs"] = span["last_seq"] - span["first_seq"] + 1 - seqs
        span["repeated_seqs"] = span["range_rows"] - seqs
        span.update(_signed(reader, scope, span["chain"], span["first_seq"], span["last_seq"]))
    return spans


def gaps(reader: Reader, scope: Scope, chain: str, lo: int, hi: int, limit: int = 10) -> list[dict[str, Any]]:
    """The first stretches of seq missing from a chain between lo and hi (asked only when some are)."""
    sql = (
        "SELECT previous + 1, seq - 1 FROM (SELECT seq, lagInFrame(seq) OVER (ORDER BY seq ROWS BETWEEN 1 PRECEDING "
        f"AND CURRENT ROW) AS previous FROM {scope.events} WHERE chain = {{chain:String}} AND seq BETWEEN "
        "{lo:UInt64} AND {hi:UInt64}) WHERE seq > previous + 1 AND previous > 0 ORDER BY seq LIMIT {n:UInt64}"
    )
    rows = reader.select(sql, {"chain": chain, "lo": lo, "hi": hi, "n": limit})
    return _dicts(("from_seq", "to_seq"), rows)


def _signed(reader: Reader, scope: Scope, chain: str, lo: int, hi: int) -> dict[str, Any]:
    """The checkpoints of a chain signed within [lo, hi], and the first one at or after hi (which signs the end)."""
    sql = (
        "SELECT countIf(seq BETWEEN {lo:UInt64} AND {hi:UInt64}), minIf(seq, seq >= {hi:UInt64}), "
        f"countIf(seq >= {{hi:UInt64}}), groupUniqArray(key_id) FROM {scope.checkpoints} WHERE chain = {{chain:String}}"
    )
    count, closing, after, keys = reader.select(sql, {"lo": lo, "hi": hi, "chain": chain})[0]
    return {"checkpoints": count, "closing_checkpoint": closing if after else None, "signing_keys": sorted(keys)}


def checkpoints(reader: Reader, scope: Scope, chain: str, lo: int, hi: int) -> list[list[Any]]:
    """A chain's checkpoints from lo up to the one closing hi (`Checkpoint` fields, created in epoch ms), each
    with the stored hash of the row it names ("" if that row is not there)."""
    sql = (
        "SELECT c.seq, c.hash, c.rows, toUnixTimestamp64Milli(c.created), c.key_id, c.signature, c.chain, "
        f"e.hash FROM {scope.checkpoints} AS c LEFT JOIN (SELECT seq, hash FROM {scope.events} "
        "WHERE chain = {chain:String} AND seq >= {lo:UInt64}) AS e ON e.seq = c.seq "
        "WHERE c.chain = {chain:String} AND c.seq >= {lo:UInt64} AND c.seq <= "
        f"(SELECT if(countIf(seq >= {{hi:UInt64}}) > 0, minIf(seq, seq >= {{hi:UInt64}}), max(seq)) "
        f"FROM {scope.checkpoints} WHERE chain = {{chain:String}}) ORDER BY c.seq"
    )
    return reader.select(sql, {"lo": lo, "hi": hi, "chain": chain})


def retention(reader: Reader, scope: Scope) -> dict[str, Any]:
    """The tables' engines (TTL included) as ClickHouse has them, the oldest row kept, rows with a stored body."""
    sql = (
        "SELECT name, engine, engine_full FROM system.tables WHERE database = {db:String} "
        "AND name IN {names:Array(String)}"
    )
    names = [EVENTS, CHECKPOINTS, f"{EVENTS}_local", f"{CHECKPOINTS}_local"]
    tables = reader.select(sql, {"db": check_database(scope.database), "names": names})
    oldest = reader.select(f"SELECT toUnixTimestamp64Milli(min(ts)), count() FROM {scope.events}")[0]
    bodies = reader.select(f"SELECT countIf(body != '') FROM {scope.events} WHERE {scope.where()}", scope.parameters())[
        0
    ][0]
    return {
        "tables": {name: {"engine": engine, "engine_full": full} for name, engine, full in tables},
        "oldest_ms": oldest[0] if oldest[1] else None,
        "rows_with_body": bodies,
    }
