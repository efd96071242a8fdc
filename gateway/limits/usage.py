"""What a key may still do: `GET /v1/gateway/usage[?model=M]`, answered for the key that asks.

Every rate_limit and budget rule that applies to the key (for the model given, or for each model it may
use), with the counter's limit, what is used now (a budget's `used_usd` includes reservations of requests
in flight), what remains, and when it resets. Read with one round trip per model; nothing is counted.
"""

import time
from typing import Any

from gateway.auth.keys import Principal
from gateway.limits.alerts import usd
from gateway.limits.counters import State
from gateway.limits.plan import Periods, Planned, Who, plan
from gateway.limits.service import Limits
from gateway.policy.compiled import PolicySet
from gateway.settings import LimitsSettings, ModelConfig


async def report(
    limits: Limits, policies: PolicySet, settings: LimitsSettings, principal: Principal, models: list[ModelConfig]
) -> dict[str, Any]:
    from zoneinfo import ZoneInfo

    seen: dict[str, tuple[Planned, State, list[str]]] = {}
    for model in models:
        effective = policies.resolve(principal.team, principal.key_id, principal.tags, model.name, "chat/completions")
        if not effective.limits:
            continue
        who = Who(principal.key_id, principal.team, model.name, "")
        planned = plan(
            effective,
            who,
            prefix=settings.key_prefix,
            periods=Periods(ZoneInfo(settings.timezone)),
            now=time.time(),
            prompt_tokens=0,
            answer_cap=0,
            reserve=0,
            lease_ms=int(settings.lease_seconds * 1000),
        )
        fresh = [item for item in planned if item.counter.key not in seen]
        for item, state in zip(fresh, await limits.peek(fresh), strict=True):
            seen[item.counter.key] = (item, state, [])
        for item in planned:
            seen[item.counter.key][2].append(model.name)
    rows = [_row(item, state, names) for item, state, names in seen.values()]
    return {
        "object": "gateway.usage",
        "key": {"id": principal.key_id, "name": principal.name, "team": principal.team},
        "limits": [row for row in rows if row["kind"] != "budget"],
        "budgets": [row for row in rows if row["kind"] == "budget"],
        "backend": limits.status(),
    }


def _row(item: Planned, state: State, models: list[str]) -> dict[str, Any]:
    c = item.counter
    row: dict[str, Any] = {
        "policy": item.ref.policy,
        "rule": item.ref.rule,
        "kind": c.kind,
        "scope": c.key.rsplit(":", 1)[-1],
        "models": models,
        "enforced": c.enforce,
    }
    if c.kind == "budget":
        row.update(
            period=item.period,
            limit_usd=usd(c.limit),
            used_usd=usd(state.used),
            remaining_usd=usd(max(0, c.limit - state.used)),
            resets_in_seconds=round(state.reset_ms / 1000, 3),
        )
    else:
        row.update(
            limit=c.limit,
            used=state.used,
            remaining=max(0, c.limit - state.used),
            resets_in_seconds=round(state.reset_ms / 1000, 3),
        )
    return row
