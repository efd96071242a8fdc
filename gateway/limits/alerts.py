"""Soft budget thresholds: each is reported once per period (the Redis script or the process decides which
settlement crossed it first), as an event in the audit trail and, when `limits.webhook_url` is set, as a
JSON POST to it (three attempts, in the background; a webhook that is down never slows a request).

    {"type": "budget_threshold", "policy": ..., "rule": ..., "period": "2026-11", "scope": "team=finance",
     "threshold_percent": 80, "threshold_usd": "80.000000", "spent_usd": "80.250000", "limit_usd": "100.000000"}
"""

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from gateway import codec
from gateway.auth.keys import Principal
from gateway.limits.service import Alert
from gateway.pipeline import RequestContext
from gateway.policy.engine import Decision
from gateway.settings import Timeouts
from gateway.upstream.client import UpstreamClient, UpstreamRequest

log = logging.getLogger("gateway.limits")
ATTEMPTS = 3
TIMEOUTS = Timeouts(connect=2.0, read=5.0, total=10.0)


def usd(micro: int) -> str:
    return f"{micro // 1_000_000}.{micro % 1_000_000:06d}"


def payload(alert: Alert) -> dict[str, Any]:
    item = alert.planned
    counter = item.counter
    scope = counter.key.rsplit(":", 1)[-1]
    return {
        "type": "budget_threshold",
        "policy": item.ref.policy,
        "rule": item.ref.rule,
        "period": item.period,
        "scope": scope,
        "threshold_percent": alert.threshold * 100 // counter.limit if counter.limit else 0,
        "threshold_usd": usd(alert.threshold),
        "spent_usd": usd(alert.spent),
        "limit_usd": usd(counter.limit),
    }


class Alerts:
    def __init__(
        self, client: UpstreamClient, webhook_url: str | None, record: Callable[[RequestContext], None] | None
    ) -> None:
        self.client = client
        self.webhook_url = webhook_url
        self.record = record
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent = 0
        self.failed = 0

    def __call__(self, alert: Alert) -> None:
        body = payload(alert)
        log.warning("budget threshold crossed: %s", codec.dumps(body).decode())
        if self.record is not None:
            self.record(_event(alert, body))
        if self.webhook_url is not None:
            task = asyncio.get_running_loop().create_task(self._post(codec.dumps(body)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _post(self, body: bytes) -> None:
        assert self.webhook_url is not None
        request = UpstreamRequest("POST", self.webhook_url, {"content-type": "application/json"}, body, TIMEOUTS)
        for attempt in range(ATTEMPTS):
            try:
                response = await self.client.send(request)
                await response.read()
                response.close()
                if response.status < 300:
                    self.sent += 1
                    return
                problem = f"HTTP {response.status}"
            except Exception as exc:  # the webhook's failure is logged, never raised into a request
                problem = str(exc)
            log.warning("budget webhook attempt %d failed: %s", attempt + 1, problem)
            await asyncio.sleep(0.5 * 2**attempt)
        self.failed += 1

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _event(alert: Alert, body: dict[str, Any]) -> RequestContext:
    """The audit trail's record of the threshold: an event of route `gateway/budget_threshold`."""
    scope = _scope_values(str(body["scope"]))
    model = {"model": scope["model"]} if "model" in scope else {}
    ctx = RequestContext(f"alert-{uuid.uuid4().hex[:16]}", "gateway/budget_threshold", model, b"", {}, None)
    # the budget's scope is who the row is about: its team, key and model columns filter as any request's
    ctx.principal = Principal(scope.get("key", ""), scope.get("team", ""), "", None)
    ref = alert.planned.ref
    detail = f"{body['threshold_percent']}% of {body['limit_usd']} USD {body['period']} {body['scope']}"
    ctx.decisions.append(Decision(ref.policy, "", ref.rule, "budget", "warn", "output", detail, 0))
    return ctx


def _scope_values(scope: str) -> dict[str, str]:
    """`team=finance,key=k1` (values URL-quoted, see gateway.limits.plan) → {"team": "finance", "key": "k1"}."""
    if scope == "all":
        return {}
    pairs = (part.split("=", 1) for part in scope.split(",") if "=" in part)
    return {name: unquote(value) for name, value in pairs}
