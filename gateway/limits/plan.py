"""From the effective policy of a request to the counters its admission takes: pure, no I/O.

Keys name the rule and the scope values, so every worker and replica counts the same thing in the same
key, and a policy revision that changes a limit keeps the counts:

    {gw}:rpm:<policy>/<rule>:team=finance,key=k1          (rpm, tpm, concurrent)
    {gw}:budget:<policy>/<rule>:2026-11:team=finance      (a budget, per calendar period)

`{gw}` is the configured prefix as a Redis Cluster hash tag: all of a request's keys share one slot, which
is what lets one script check and take them atomically.
"""

import functools
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Literal
from urllib.parse import quote
from zoneinfo import ZoneInfo

from gateway.limits.counters import Counter
from gateway.policy.compiled import Effective, RuleRef
from gateway.policy.schema import BudgetRule, RateLimitRule, Scope

MICRO = 1_000_000
Period = Literal["day", "week", "month"]


@dataclass(frozen=True, slots=True)
class Planned:
    """One counter of a request, with the rule it comes from."""

    ref: RuleRef
    rule: RateLimitRule | BudgetRule
    counter: Counter
    period: str = ""  # budget: the period id, e.g. 2026-11

    @property
    def fail_open(self) -> bool:
        return self.rule.on_backend_down == "fail_open"


@dataclass(frozen=True, slots=True)
class Who:
    """The scope values of a request."""

    key: str
    team: str
    model: str
    user: str

    def scope(self, per: tuple[Scope, ...]) -> str:
        return _scope(per, self.key, self.team, self.model, self.user)


@functools.lru_cache(maxsize=8192)
def _scope(per: tuple[Scope, ...], key: str, team: str, model: str, user: str) -> str:
    if not per:
        return "all"
    values = {"key": key, "team": team, "model": model, "user": user}
    return ",".join(f"{name}={quote(values[name], safe='')}" for name in per)


def period_of(period: Period, zone: ZoneInfo, now: float) -> tuple[str, int]:
    """The calendar period containing `now` in `zone`: its id and its end (epoch ms), DST-safe."""
    today = datetime.fromtimestamp(now, zone).date()
    if period == "day":
        ident, end = today.isoformat(), today + timedelta(days=1)
    elif period == "week":
        year, week, weekday = today.isocalendar()
        ident, end = f"{year}-W{week:02d}", today + timedelta(days=8 - weekday)
    else:
        ident = f"{today.year}-{today.month:02d}"
        end = date(today.year + today.month // 12, today.month % 12 + 1, 1)
    return ident, int(datetime.combine(end, time(0), zone).timestamp() * 1000)


class Periods:
    """period_of, remembered until the period ends (it is asked on every request with a budget)."""

    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone
        self._known: dict[Period, tuple[str, int]] = {}

    def __call__(self, period: Period, now: float) -> tuple[str, int]:
        known = self._known.get(period)
        if known is None or now * 1000 >= known[1]:
            known = self._known[period] = period_of(period, self.zone, now)
        return known


def plan(
    effective: Effective,
    who: Who,
    *,
    prefix: str,
    periods: Periods,
    now: float,
    prompt_tokens: int,
    answer_cap: int | None,
    reserve: int,
    lease_ms: int,
) -> list[Planned]:
    """The counters of a request: `answer_cap` is the request's own cap on the answer (or None), `reserve`
    its maximum cost in micro-USD."""
    tag = "{" + prefix + "}"
    planned: list[Planned] = []
    for ref, rule in effective.rate_limits:
        enforce = ref.action == "block"
        base = f"{ref.policy}/{ref.rule}:{who.scope(rule.per)}"
        if rule.rpm is not None:
            planned.append(Planned(ref, rule, Counter("rpm", f"{tag}:rpm:{base}", rule.rpm, 1, enforce=enforce)))
        if rule.tpm is not None:
            estimate = prompt_tokens + (answer_cap if answer_cap is not None else rule.default_max_tokens)
            counter = Counter("tpm", f"{tag}:tpm:{base}", rule.tpm, estimate, enforce=enforce)
            planned.append(Planned(ref, rule, counter))
        if rule.concurrent is not None:
            counter = Counter("concurrent", f"{tag}:conc:{base}", rule.concurrent, 1, lease_ms, enforce=enforce)
            planned.append(Planned(ref, rule, counter))
    for ref, budget in effective.budgets:
        ident, end = periods(budget.period, now)
        limit = int(budget.usd * MICRO)
        alerts = tuple(limit * percent // 100 for percent in sorted(set(budget.alert_percent)))
        key = f"{tag}:budget:{ref.policy}/{ref.rule}:{ident}:{who.scope(budget.per)}"
        counter = Counter("budget", key, limit, reserve, lease_ms, end, ref.action == "block", alerts)
        planned.append(Planned(ref, budget, counter, ident))
    return planned
