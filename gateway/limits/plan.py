"""From the effective policy of a request to the counters its admission takes: pure, no I/O.

Keys name the rule and the scope values, so every worker and replica counts the same thing in the same
key, and a policy revision that changes a limit keeps the counts:

    {gw}:rpm:<policy>/<rule>:team=finance,key=k1          (rpm, tpm, concurrent)
    {gw}:budget:<policy>/<rule>:2026-11:team=finance      (a budget, per calendar period)

`{gw}` is the configured prefix as a Redis Cluster hash tag: all of a request's keys share one slot, which
is what lets one script check and take them atomically.

`plan` works a request's counters out from scratch; `Planner` (the Admit stage's) remembers them per
effective policy and scope values, so a request only fills in its own amounts.
"""

import functools
import math
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


@dataclass(slots=True)
class Planned:
    """One counter of a request, with the rule it comes from (not frozen, for speed: see counters.Counter)."""

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


class Template:
    """The counters of every request with the same effective policy and scope values, amounts aside."""

    __slots__ = ("_budgets", "_tpm", "budgets", "effective", "needs_tokens", "planned", "until_ms")

    def __init__(self, effective: Effective, planned: list[Planned]) -> None:
        self.effective = effective  # held, so its id() is not reused while this template is known
        self.planned = planned
        self._tpm: list[tuple[int, int]] = []  # (index, the rule's default_max_tokens)
        self._budgets: list[int] = []
        for i, item in enumerate(planned):
            if isinstance(item.rule, RateLimitRule) and item.counter.kind == "tpm":
                self._tpm.append((i, item.rule.default_max_tokens))
            elif item.counter.kind == "budget":
                self._budgets.append(i)
        self.budgets = bool(self._budgets)
        self.needs_tokens = bool(self._tpm or self._budgets)
        ends = [planned[i].counter.expire_at_ms for i in self._budgets]
        self.until_ms = min(ends) if ends else math.inf  # the first budget period's end: then a new template

    def fill(self, prompt_tokens: int, answer_cap: int | None, reserve: int) -> list[Planned]:
        """What `plan` answers for these amounts: the tpm and budget counters are new, the others shared."""
        planned = self.planned.copy()
        for i, default_max_tokens in self._tpm:
            estimate = prompt_tokens + (answer_cap if answer_cap is not None else default_max_tokens)
            planned[i] = _with_amount(planned[i], estimate)
        for i in self._budgets:
            planned[i] = _with_amount(planned[i], reserve)
        return planned


def _with_amount(item: Planned, amount: int) -> Planned:
    c = item.counter
    counter = Counter(c.kind, c.key, c.limit, amount, c.window_ms, c.expire_at_ms, c.enforce, c.alerts)
    return Planned(item.ref, item.rule, counter, item.period)


class Planner:
    """`plan`, remembered per (effective policy, scope values) until a budget period ends; at most LIMIT of
    them (then forgotten all at once, as the policy set's own cache is)."""

    LIMIT = 4096

    def __init__(self, prefix: str, periods: Periods, lease_ms: int) -> None:
        self.prefix = prefix
        self.periods = periods
        self.lease_ms = lease_ms
        self._known: dict[tuple[int, str, str, str, str], Template] = {}

    def template(self, effective: Effective, key: str, team: str, model: str, user: str, now: float) -> Template:
        known = self._known.get((id(effective), key, team, model, user))
        if known is None or known.effective is not effective or now * 1000 >= known.until_ms:
            if len(self._known) >= self.LIMIT:
                self._known.clear()
            who = Who(key, team, model, user)
            planned = plan(
                effective,
                who,
                prefix=self.prefix,
                periods=self.periods,
                now=now,
                prompt_tokens=0,
                answer_cap=0,
                reserve=0,
                lease_ms=self.lease_ms,
            )
            known = self._known[(id(effective), key, team, model, user)] = Template(effective, planned)
        return known
