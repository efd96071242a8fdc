"""The limits service of one worker: admission, settlement and failure modes over Redis or the process.

    admit(planned, ticket)   one round trip; with Redis unreachable, a request under a fail_closed rule is
                             refused (503 limits_unavailable), others are counted in the process instead
    settle(held, actual)     never awaited by the request: it rides with the next pipeline to Redis; one that
                             fails is kept and sent again once Redis is back, so none is lost
    run()                    the health probe that brings Redis back into use, and the resending

Settling twice is harmless: a retried settlement whose reservation is already gone is skipped (its first
attempt landed). A request admitted in the process while Redis was down settles there, and its spend is
also queued for Redis, so the shared budget sees it when Redis returns.
"""

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from gateway.errors import LimitsUnavailable
from gateway.limits.counters import Admission, Crossed, LocalBackend, State
from gateway.limits.plan import Planned
from gateway.limits.redis_backend import BackendDown, RedisBackend, crossed_of, is_down
from gateway.settings import LimitsSettings

log = logging.getLogger("gateway.limits")
PROBE_SECONDS = 0.5


@dataclass(slots=True)
class Held:
    """What a request holds after admission, until it settles."""

    ticket: str
    planned: list[Planned]
    admission: Admission
    backend: str  # "redis" or "process"


@dataclass(frozen=True, slots=True)
class Alert:
    planned: Planned
    threshold: int
    spent: int


@dataclass(slots=True)
class _Pending:
    ticket: str
    planned: list[Planned]
    actual: list[int]
    retry: bool = False
    attempts: int = field(default=0)


class Limits:
    def __init__(self, settings: LimitsSettings, on_alert: Callable[[Alert], None] | None = None) -> None:
        self.settings = settings
        self.local = LocalBackend()
        self.redis = RedisBackend(settings.redis_url, settings.connect_timeout) if settings.redis_url else None
        self.on_alert = on_alert
        self.up = True
        self.last_error = ""
        self.failovers = 0
        self.pending: deque[_Pending] = deque()
        self._wake = asyncio.Event()
        self._settling = 0

    @property
    def shared(self) -> bool:
        return self.redis is not None

    async def admit(self, planned: list[Planned], ticket: str) -> Held:
        counters = [p.counter for p in planned]
        if self.redis is not None and self.up:
            abandoned = functools.partial(self._abandoned, planned, ticket)
            try:
                return Held(ticket, planned, await self.redis.admit(counters, ticket, abandoned), "redis")
            except BackendDown as exc:
                self._down(exc)
        if self.redis is not None:
            closed = next((p for p in planned if not p.fail_open), None)
            if closed is not None:
                raise LimitsUnavailable(
                    f"Rate limits and budgets cannot be checked right now (rule '{closed.ref.rule}' of policy "
                    f"'{closed.ref.policy}' fails closed while the limits store is unreachable)."
                )
        return Held(ticket, planned, await self.local.admit(counters, ticket), "process")

    def _abandoned(self, planned: list[Planned], ticket: str, admission: Admission) -> None:
        """A request cancelled (its client gone) while its admission was on its way: what the admission took
        is given back, as by a request that used nothing, so no slot or reservation waits for its lease."""
        if admission.ok:
            nothing = [0 if p.counter.kind in ("tpm", "budget") else 1 for p in planned]  # as Settle's _actual
            self.settle(Held(ticket, planned, admission, "redis"), nothing)

    def settle(self, held: Held, actual: list[int]) -> None:
        if held.backend == "process":
            crossed = self.local.settle_now([p.counter for p in held.planned], actual, held.ticket)
            self._alert(held.planned, crossed)
            budgets = [(p, a) for p, a in zip(held.planned, actual, strict=True) if p.counter.kind == "budget"]
            if self.redis is None or not budgets:
                return
            # the spend still belongs in the shared budget: a settlement without a reservation
            planned = [replace(p, counter=replace(p.counter, amount=0)) for p, _ in budgets]
            self._dispatch(_Pending(held.ticket, planned, [a for _, a in budgets]))
        else:
            self._dispatch(_Pending(held.ticket, held.planned, actual))

    async def peek(self, planned: list[Planned]) -> list[State]:
        counters = [p.counter for p in planned]
        if self.redis is not None and self.up:
            try:
                return await self.redis.peek(counters)
            except BackendDown as exc:
                self._down(exc)
        return await self.local.peek(counters)

    def status(self) -> dict[str, object]:
        status: dict[str, object] = {"backend": "redis" if self.redis else "process"}
        if self.redis is not None:
            status.update(connected=self.up, failovers=self.failovers, last_error=self.last_error)
        status["pending_settlements"] = len(self.pending) + self._settling
        return status

    async def run(self) -> None:
        """Sends settlements that wait (Redis was down) once it is back, and probes it while it is down."""
        if self.redis is None:
            return
        while True:
            if not self.up:
                await self._probe()
                continue
            if self.pending:
                await asyncio.sleep(PROBE_SECONDS / 5)  # failed ones: not in a tight loop
                waiting, self.pending = self.pending, deque()
                for item in waiting:
                    self._dispatch(item)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), PROBE_SECONDS * 10)
            if not self.pending and not self._settling:
                await self._probe()

    def _dispatch(self, item: _Pending) -> None:
        """Send a settlement with the next pipeline; on failure it waits in `pending` for Redis to return."""
        assert self.redis is not None
        if not self.up:
            self.pending.append(item)
            return
        self._settling += 1
        item.attempts += 1
        counters = [p.counter for p in item.planned]
        future = self.redis.settle_later(counters, item.actual, item.ticket, item.retry)
        future.add_done_callback(lambda done: self._settled(item, done))

    def _settled(self, item: _Pending, done: "asyncio.Future[Any]") -> None:
        self._settling -= 1
        error = done.exception()
        if error is None:
            self._alert(item.planned, crossed_of(done.result()))
            return
        # an error while connecting means the script never ran; any other may have run it
        item.retry = item.retry or "connecting" not in str(error)
        self.pending.append(item)
        if is_down(error):
            self._down(error)
        else:
            log.error("settlement of %s failed: %s; it is kept and retried", item.ticket, error)
        self._wake.set()

    async def _probe(self) -> None:
        assert self.redis is not None
        try:
            await self.redis.ping()
        except BackendDown as exc:
            self._down(exc)
            await asyncio.sleep(PROBE_SECONDS)
            return
        if not self.up:
            log.warning("the limits store is reachable again; %d settlements to send", len(self.pending))
        self.up = True

    async def drain(self, seconds: float) -> None:
        """At shutdown: send what is pending, for at most `seconds`."""
        deadline = time.monotonic() + seconds
        while (self.pending or self._settling) and time.monotonic() < deadline:
            if self.pending and self.up:
                waiting, self.pending = self.pending, deque()
                for item in waiting:
                    self._dispatch(item)
            await asyncio.sleep(0.01)
        if self.pending or self._settling:
            lost = len(self.pending) + self._settling
            log.error("%d settlements could not be sent to the limits store before shutdown", lost)

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.close()

    def _down(self, exc: BaseException) -> None:
        self.last_error = str(exc)[:300]
        if self.up:
            self.failovers += 1
            log.error("the limits store is unreachable (%s): fail-open rules count in this process", exc)
        self.up = False

    def _alert(self, planned: list[Planned], crossed: list[Crossed]) -> None:
        if self.on_alert is None:
            return
        for item in crossed:
            self.on_alert(Alert(planned[item.index], item.threshold, item.spent))
