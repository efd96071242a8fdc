"""The spend section: cost by team and key, spend against every budget rule of the current policies, and the
soft thresholds crossed.

A budget rule's spend is recomputed from the audit rows: the requests its policy matches (teams, keys, key
tags through the key store, model globs, routes), grouped by its calendar period (in `limits.timezone`) and
its scope (`per`), summing each request's recorded cost. That is what the budget counter settles; the counter
also holds reservations of requests in flight, which no row records.
"""

import fnmatch
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from gateway.policy.schema import BudgetRule
from gateway.reports import queries
from gateway.reports.model import Chart, Column, Fact, Section, Series, Status, Table, iso, usd

if TYPE_CHECKING:
    from gateway.policy.compiled import Loaded
    from gateway.reports.build import Context

CHART_TOP = 15
PER_RULE = 100  # the budget table keeps each rule's most used periods and scopes


def section(ctx: "Context") -> list[Section]:
    traffic = ctx.found["traffic"]
    team_keys = sorted({r["key_id"] for r in traffic["by_key"] if r["key_id"]}) if ctx.scope.team else []
    thresholds = queries.threshold_events(ctx.reader, ctx.scope, team_keys)
    rules = _budget_rules(ctx)
    budgets = _budgets(ctx, rules) if rules else []
    by_team = Table(
        "by_team",
        "Spend by team",
        (
            Column("team", "Team"),
            Column("requests", "Requests", "int"),
            Column("tokens_in", "Tokens in", "int"),
            Column("tokens_out", "Tokens out", "int"),
            Column("cost_usd", "Cost (USD)", "usd"),
        ),
        tuple(
            (r["team"] or "(unauthenticated)", r["requests"], r["tokens_in"], r["tokens_out"], usd(r["cost_micro_usd"]))
            for r in sorted(traffic["by_team"], key=lambda r: -r["cost_micro_usd"])
        ),
    )
    by_key = Table(
        "by_key",
        "Spend by virtual key",
        (
            Column("team", "Team"),
            Column("key_id", "Key id"),
            Column("key_name", "Key name"),
            Column("requests", "Requests", "int"),
            Column("cost_usd", "Cost (USD)", "usd"),
        ),
        tuple(
            (r["team"], r["key_id"], r["key_name"], r["requests"], usd(r["cost_micro_usd"]))
            for r in sorted(traffic["by_key"], key=lambda r: -r["cost_micro_usd"])
            if r["key_id"]
        ),
    )
    budget_table = Table(
        "budgets",
        "Spend against budgets",
        (
            Column("policy", "Policy"),
            Column("rule", "Rule"),
            Column("action", "Action"),
            Column("period", "Period"),
            Column("scope", "Scope"),
            Column("spent_usd", "Spent (USD)", "usd"),
            Column("limit_usd", "Budget (USD)", "usd"),
            Column("used_percent", "Used", "percent"),
            Column("requests", "Requests", "int"),
            Column("refused", "Refused", "int"),
        ),
        tuple(budgets),
        "Spend within the report's period, from the cost recorded on each request (a period that began before "
        "the report starts shows only the part inside it). Rules of the current policy files; per rule the "
        f"{PER_RULE} most used periods and scopes.",
    )
    threshold_table = Table(
        "thresholds",
        "Soft budget thresholds crossed",
        (Column("at", "At", "time"), Column("policy", "Policy"), Column("rule", "Rule"), Column("detail", "Detail")),
        tuple((iso(t["at_ms"]), t["policy"], t["rule"], t["detail"]) for t in thresholds),
    )
    total = traffic["totals"]["cost_micro_usd"]
    over = [b for b in budgets if b[7] >= 100]
    facts = (
        Fact("cost_usd", "Total cost (USD)", usd(total), "usd"),
        Fact("budget_rules", "Budget rules", len(rules), "int"),
        Fact("budgets_exhausted", "Budget periods used up", len(over), "int"),
        Fact("thresholds", "Thresholds crossed", len(thresholds), "int"),
        Fact("refused", "Requests refused by budgets", sum(b[9] for b in budgets), "int"),
    )
    charts = _charts(traffic, budgets)
    status: Status = "attention" if over else "info"
    summary = f"{usd(total)} USD spent; {len(thresholds)} soft thresholds crossed; {len(over)} budget periods used up."
    tables = (by_team, by_key, budget_table, threshold_table)
    return [Section("spend", "Spend against budgets", status, summary, facts, tables, charts)]


def _charts(traffic: dict[str, Any], budgets: list[tuple[Any, ...]]) -> tuple[Chart, ...]:
    teams = sorted(traffic["by_team"], key=lambda r: -r["cost_micro_usd"])[:CHART_TOP]
    spend = Chart(
        "cost_by_team",
        "Cost by team (USD)",
        "hbar",
        tuple(r["team"] or "(unauthenticated)" for r in teams),
        (Series("USD", tuple(float(usd(r["cost_micro_usd"])) for r in teams)),),
        "USD",
    )
    used = sorted(budgets, key=lambda b: -b[7])[:CHART_TOP]
    utilisation = Chart(
        "budget_used",
        "Budget used (%)",
        "hbar",
        tuple(f"{b[1]} {b[3]} {b[4]}" for b in used),
        (Series("used %", tuple(b[7] for b in used)),),
        "%",
    )
    return (spend, utilisation) if used else (spend,)


def _budget_rules(ctx: "Context") -> list[tuple["Loaded", BudgetRule]]:
    if ctx.policies is None:
        return []
    return [
        (loaded, rule) for loaded in ctx.policies.loaded for rule in loaded.policy.rules if isinstance(rule, BudgetRule)
    ]


def _filters(ctx: "Context", loaded: "Loaded") -> dict[str, set[str]]:
    """The policy's match as sets of allowed values per usage column (team, key, model, route)."""
    match, filters = loaded.policy.match, {}
    if match.teams:
        filters["team"] = set(match.teams)
    keys: set[str] | None = set(match.keys) if match.keys else None
    if match.key_tags:
        tagged = {k.id for k in ctx.keys if set(k.tags) & set(match.key_tags)}
        keys = tagged if keys is None else keys & tagged
    if keys is not None:
        filters["key"] = keys
    if match.models:
        seen = [r["model"] for r in ctx.found["traffic"]["by_model"]]
        filters["model"] = {m for m in seen if any(fnmatch.fnmatchcase(m, g) for g in match.models)}
    if match.routes:
        filters["route"] = set(match.routes)
    return filters


def _budgets(ctx: "Context", rules: list[tuple["Loaded", BudgetRule]]) -> list[tuple[Any, ...]]:
    """Every budget rule's spend per period and scope, summed from one scan's usage groups."""
    refs = [(loaded.policy.name, rule.name) for loaded, rule in rules]
    users = any("user" in rule.per for _, rule in rules)
    usage = queries.budget_usage(ctx.reader, ctx.scope, ctx.settings.limits.timezone, refs, users)
    out = []
    for number, (loaded, rule) in enumerate(rules):
        filters = _filters(ctx, loaded)
        sums: dict[tuple[str, str], list[int]] = {}
        for row in usage:
            if row["key"] and all(row[column] in allowed for column, allowed in filters.items()):
                period = _period_id(rule.period, date.fromisoformat(str(row["day"])[:10]))
                scope = ",".join(f"{name}={quote(str(row[name]), safe='')}" for name in rule.per) or "all"
                entry = sums.setdefault((period, scope), [0, 0, 0])
                entry[0] += row["spent_micro_usd"]
                entry[1] += row["requests"]
                entry[2] += row[f"refused_{number}"]
        action = "shadow" if loaded.policy.mode == "shadow" else rule.action
        limit = Decimal(rule.usd).quantize(Decimal("0.000001"))
        for (period, scope), (spent, requests, refused) in sums.items():
            used = round(100 * spent / int(rule.usd * 1_000_000), 2)
            out.append(
                (loaded.policy.name, rule.name, action, period, scope, usd(spent), limit, used, requests, refused)
            )
    out.sort(key=lambda b: (b[0], b[1], -b[7], b[3], b[4]))
    return out


def _period_id(period: str, start: date) -> str:
    """The budget counter's period id: 2026-11-05, 2026-W45, 2026-11."""
    if period == "day":
        return start.isoformat()
    if period == "week":
        year, week, _ = start.isocalendar()
        return f"{year}-W{week:02d}"
    return f"{start.year}-{start.month:02d}"
