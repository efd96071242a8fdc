"""The report's sections about traffic and policy: period, requests, policies, decisions, PII, failures.

Each function takes the build Context (gateway.reports.build), runs its queries and returns its sections.
The spend section is in spend.py; coverage, verification and retention in integrity.py.
"""

from typing import TYPE_CHECKING, Any

from gateway.reports import queries, revisions
from gateway.reports.model import Chart, Column, Fact, Section, Series, Status, Table, iso, iso_moment, usd

if TYPE_CHECKING:
    from gateway.reports.build import Context

UNAUTHENTICATED = "(unauthenticated)"
CLASS_TITLES = {"ok": "2xx/3xx", "client_error": "4xx", "limited": "429", "server_error": "5xx", "no_status": "none"}
COUNT_COLUMNS = (
    Column("requests", "Requests", "int"),
    *(Column(name, CLASS_TITLES[name], "int") for name, _ in queries.STATUS_CLASSES),
    Column("tokens_in", "Tokens in", "int"),
    Column("tokens_out", "Tokens out", "int"),
    Column("cost_usd", "Cost (USD)", "usd"),
)
CHART_TOP = 15


def _counts(row: dict[str, Any]) -> tuple[Any, ...]:
    values = [row[c.id] for c in COUNT_COLUMNS[:-1]]
    return (*values, usd(row["cost_micro_usd"]))


def _team(name: str) -> str:
    return name or UNAUTHENTICATED


def requests(ctx: "Context") -> list[Section]:
    traffic = queries.traffic(ctx.reader, ctx.scope)
    ctx.found["traffic"] = traffic
    return [_period(ctx, traffic), _requests(traffic)]


def _period(ctx: "Context", traffic: dict[str, Any]) -> Section:
    totals, scope = traffic["totals"], ctx.scope
    keys = {row["key_id"] for row in traffic["by_key"] if row["key_id"]}
    facts = (
        Fact("start", "From", iso_moment(scope.start), "time"),
        Fact("end", "To (excluded)", iso_moment(scope.end), "time"),
        Fact("team", "Team", scope.team or "all teams"),
        Fact("requests", "Requests", totals["requests"], "int"),
        Fact("first_request", "First request", iso(totals["first_ms"]), "time"),
        Fact("last_request", "Last request", iso(totals["last_ms"]), "time"),
        Fact("teams", "Teams", len({row["team"] for row in traffic["by_team"] if row["team"]}), "int"),
        Fact("keys", "Virtual keys", len(keys), "int"),
    )
    summary = f"{totals['requests']:,} requests from {len(keys)} keys, {scope.start:%Y-%m-%d} to {scope.end:%Y-%m-%d}."
    return Section("period", "Period", "info", summary, facts)


def _requests(traffic: dict[str, Any]) -> Section:
    by_team = Table(
        "by_team",
        "Requests by team",
        (Column("team", "Team"), *COUNT_COLUMNS),
        tuple((_team(r["team"]), *_counts(r)) for r in traffic["by_team"]),
    )
    by_key = Table(
        "by_key",
        "Requests by virtual key",
        (Column("team", "Team"), Column("key_id", "Key id"), Column("key_name", "Key name"), *COUNT_COLUMNS),
        tuple((_team(r["team"]), r["key_id"], r["key_name"], *_counts(r)) for r in traffic["by_key"]),
        f"At most {queries.TOP} keys, the busiest first." if len(traffic["by_key"]) >= queries.TOP else "",
    )
    by_model = Table(
        "by_model",
        "Requests by model (as requested)",
        (Column("model", "Model"), *COUNT_COLUMNS),
        tuple((r["model"], *_counts(r)) for r in traffic["by_model"]),
    )
    days = traffic["by_day"]
    daily = Chart(
        "daily",
        "Requests per day (UTC) by status",
        "stacked",
        tuple(str(d["day"])[5:] for d in days),
        tuple(Series(CLASS_TITLES[name], tuple(d[name] for d in days)) for name, _ in queries.STATUS_CLASSES),
    )
    teams = sorted(traffic["by_team"], key=lambda r: -r["requests"])[:CHART_TOP]
    team_chart = Chart(
        "teams",
        "Requests by team",
        "hbar",
        tuple(_team(r["team"]) for r in teams),
        (Series("requests", tuple(r["requests"] for r in teams)),),
    )
    totals = traffic["totals"]
    facts = tuple(Fact(c.id, c.title, value, c.kind) for c, value in zip(COUNT_COLUMNS, _counts(totals), strict=True))
    failed = totals["server_error"] + totals["no_status"]
    summary = (
        f"{totals['requests']:,} requests: {totals['ok']:,} answered, {totals['client_error']:,} refused or invalid, "
        f"{totals['limited']:,} rate-limited or over budget, {failed:,} failed."
    )
    return Section("requests", "Requests", "info", summary, facts, (by_team, by_key, by_model), (daily, team_chart))


def policies(ctx: "Context") -> list[Section]:
    seen = queries.revisions(ctx.reader, ctx.scope)
    changes = revisions.changes(ctx.reader, ctx.scope, seen)
    current = ctx.policies.revision if ctx.policies is not None else None
    revision_table = Table(
        "revisions",
        "Policy revisions that decided requests",
        (
            Column("revision", "Revision", "revision"),
            Column("first_seen", "First seen", "time"),
            Column("last_seen", "Last seen", "time"),
            Column("requests", "Requests", "int"),
            Column("current", "Current", "bool"),
        ),
        tuple(
            (r["revision"], iso(r["first_ms"]), iso(r["last_ms"]), r["requests"], r["revision"] == current)
            for r in seen
        ),
    )
    change_table = Table(
        "changes",
        "Revision changes",
        (
            Column("at", "At", "time"),
            Column("from", "From", "revision"),
            Column("to", "To", "revision"),
            Column("switches", "Switches", "int"),
            Column("settled", "Settled", "time"),
        ),
        tuple((iso(c["at_ms"]), c["from"], c["to"], c["switches"], iso(c["settled_ms"])) for c in changes),
        "A change is the first request decided by a new revision; while workers reload, two revisions can "
        f"alternate for a moment: switches within {revisions.SETTLE_MS // 1000} s are one change.",
    )
    files = _policy_files(ctx)
    facts = (
        Fact("policy_dir", "Policy directory", str(ctx.settings.policy_dir or "none configured")),
        Fact("current_revision", "Current revision", current, "revision"),
        Fact("revisions_seen", "Revisions in the period", len(seen), "int"),
        Fact("changes", "Revision changes", len(changes), "int"),
    )
    status: Status = "attention" if ctx.policy_problem else "info"
    summary = f"{len(seen)} revisions decided requests in the period; {len(changes)} changes."
    if ctx.policy_problem:
        summary += f" The policy directory does not load now: {ctx.policy_problem}"
    return [Section("policies", "Policies in force", status, summary, facts, (revision_table, change_table, files))]


def _policy_files(ctx: "Context") -> Table:
    rows = []
    for loaded in ctx.policies.loaded if ctx.policies is not None else ():
        policy, match = loaded.policy, loaded.policy.match
        applies = "; ".join(
            f"{name}: {', '.join(values)}"
            for name, values in (
                ("teams", match.teams),
                ("keys", match.keys),
                ("key tags", match.key_tags),
                ("models", match.models),
                ("routes", match.routes),
            )
            if values
        )
        rules = "; ".join(f"{r.name} ({r.kind}, {r.action})" for r in policy.rules)
        rows.append((loaded.file.rsplit("/", 1)[-1], policy.name, policy.mode, applies or "every request", rules))
    return Table(
        "files",
        "Current policy files",
        (
            Column("file", "File"),
            Column("policy", "Policy"),
            Column("mode", "Mode"),
            Column("applies_to", "Applies to"),
            Column("rules", "Rules (kind, action)"),
        ),
        tuple(rows),
    )


def decisions(ctx: "Context") -> list[Section]:
    rows = queries.decisions(ctx.reader, ctx.scope)
    table = Table(
        "by_rule",
        "Requests by policy rule and action",
        (
            Column("policy", "Policy"),
            Column("rule", "Rule"),
            Column("kind", "Kind"),
            Column("action", "Action"),
            Column("requests", "Requests", "int"),
            Column("fired", "Times fired", "int"),
        ),
        tuple((r["policy"], r["rule"], r["kind"], r["action"], r["requests"], r["fired"]) for r in rows),
        "A request counts once per rule and action, however often the rule fired on it (input and output).",
    )
    per_action = {
        a: sum(r["requests"] for r in rows if r["action"] == a) for a in ("block", "warn", "shadow", "redact")
    }
    facts = tuple(Fact(action, f"{action.capitalize()} decisions", n, "int") for action, n in per_action.items())
    shown = [r for r in rows if r["action"] in ("block", "warn", "shadow")][:CHART_TOP]
    chart = Chart(
        "by_rule",
        "Blocked, warned and shadowed requests by rule",
        "hbar",
        tuple(f"{r['policy']}/{r['rule']} ({r['action']})" for r in shown),
        (Series("requests", tuple(r["requests"] for r in shown)),),
    )
    summary = (
        f"{per_action['block']:,} blocks, {per_action['warn']:,} warnings and {per_action['shadow']:,} shadow "
        f"decisions by {len({(r['policy'], r['rule']) for r in rows})} rules."
    )
    return [Section("decisions", "Blocked and warned requests", "info", summary, facts, (table,), (chart,))]


def pii(ctx: "Context") -> list[Section]:
    rows = queries.pii(ctx.reader, ctx.scope)
    table = Table(
        "by_entity",
        "PII detections by entity type and action",
        (
            Column("entity", "Entity"),
            Column("action", "Action"),
            Column("detections", "Detections", "int"),
            Column("requests", "Requests", "int"),
        ),
        tuple((r["entity"], r["action"], r["detections"], r["requests"]) for r in rows),
    )
    entities: dict[str, int] = {}
    for r in rows:
        entities[r["entity"]] = entities.get(r["entity"], 0) + r["detections"]
    top = sorted(entities.items(), key=lambda item: -item[1])[:CHART_TOP]
    chart = Chart(
        "by_entity",
        "PII detections by entity",
        "hbar",
        tuple(e for e, _ in top),
        (Series("detections", tuple(n for _, n in top)),),
    )
    total = sum(entities.values())
    blocked = sum(r["requests"] for r in rows if r["action"] == "block")
    facts = (
        Fact("detections", "Detections", total, "int"),
        Fact("blocked", "Requests blocked for PII", blocked, "int"),
    )
    summary = f"{total:,} detections of {len(entities)} entity types; values are never stored, only types and counts."
    return [Section("pii", "PII detections", "info", summary, facts, (table,), (chart,))]


def _failed_and_degraded(ctx: "Context") -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """From the outcome groups: failed requests by status, error, model, deployment; degraded ones by model."""
    own = {m.name: {d.label for d in m.deployments} for m in ctx.settings.models}
    failed: dict[tuple[Any, ...], int] = {}
    degraded: dict[str, dict[str, Any]] = {}
    for g in queries.outcomes(ctx.reader, ctx.scope):
        model, deployment, n = g["model"], g["deployment"], g["requests"]
        fallback = bool(deployment) and model in own and deployment not in own[model]
        if g["status"] >= 500 or g["status"] == 0:
            key = (g["status"], g["error_type"], g["error_code"], model, deployment)
            failed[key] = failed.get(key, 0) + n
        if g["retried"] or g["client_disconnected"] or fallback:
            entry = degraded.setdefault(
                model, dict.fromkeys(("retried", "fallback", "client_disconnected", "degraded"), 0)
            )
            entry["retried"] += n if g["retried"] else 0
            entry["fallback"] += n if fallback else 0
            entry["client_disconnected"] += n if g["client_disconnected"] else 0
            entry["degraded"] += n
    failed_rows = [
        dict(zip(("status", "error_type", "error_code", "model", "deployment"), key, strict=True), requests=n)
        for key, n in sorted(failed.items(), key=lambda item: (-item[1], item[0]))
    ]
    degraded_rows = [
        {"model": m, **e} for m, e in sorted(degraded.items(), key=lambda item: (-item[1]["degraded"], item[0]))
    ]
    return failed_rows, degraded_rows


def failures(ctx: "Context") -> list[Section]:
    failed_found, degraded_found = _failed_and_degraded(ctx)
    found = {"failed": failed_found, "degraded": degraded_found}
    totals = ctx.found["traffic"]["totals"]
    failed_table = Table(
        "failed",
        "Failed requests (5xx, or no answer)",
        (
            Column("status", "Status", "int"),
            Column("error_type", "Error type"),
            Column("error_code", "Error code"),
            Column("model", "Model"),
            Column("deployment", "Deployment"),
            Column("requests", "Requests", "int"),
        ),
        tuple(
            (r["status"], r["error_type"], r["error_code"], r["model"], r["deployment"], r["requests"])
            for r in found["failed"]
        ),
    )
    degraded_table = Table(
        "degraded",
        "Degraded requests by model",
        (
            Column("model", "Model"),
            Column("retried", "Retried", "int"),
            Column("fallback", "Served by a fallback", "int"),
            Column("client_disconnected", "Client disconnected", "int"),
            Column("degraded", "Degraded", "int"),
        ),
        tuple(
            (r["model"], r["retried"], r["fallback"], r["client_disconnected"], r["degraded"])
            for r in found["degraded"]
        ),
        "Retried: more than one upstream attempt. Fallback: answered by a deployment that is not one of the requested "
        "model's own (as configured now). A default_response answer is not told apart in the audit rows.",
    )
    failed = totals["server_error"] + totals["no_status"]
    degraded = sum(r["degraded"] for r in found["degraded"])
    rate = round(100 * failed / totals["requests"], 3) if totals["requests"] else 0.0
    facts = (
        Fact("failed", "Failed requests", failed, "int"),
        Fact("failure_rate", "Failure rate", rate, "percent"),
        Fact("degraded", "Degraded requests", degraded, "int"),
        Fact("retried", "Retried", sum(r["retried"] for r in found["degraded"]), "int"),
        Fact("fallback", "Served by a fallback", sum(r["fallback"] for r in found["degraded"]), "int"),
        Fact(
            "client_disconnected", "Client disconnects", sum(r["client_disconnected"] for r in found["degraded"]), "int"
        ),
    )
    days = ctx.found["traffic"]["by_day"]
    chart = Chart(
        "daily_failures",
        "Failed requests per day (UTC)",
        "bar",
        tuple(str(d["day"])[5:] for d in days),
        (Series("failed", tuple(d["server_error"] + d["no_status"] for d in days)),),
    )
    summary = f"{failed:,} failed requests ({rate}%), {degraded:,} degraded."
    return [
        Section(
            "failures", "Failed and degraded requests", "info", summary, facts, (failed_table, degraded_table), (chart,)
        )
    ]
