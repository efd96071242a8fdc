"""The limits service of one worker: admission, settlement and failure modes over Redis or the process.

    admit(planned, ticket)   one round trip; with Redis unreachable, a request under a fail_closed rule is
                             refused (503 limits_unavailable), others are counted in the process instead
    settle(held, actual)     never awaited by the request: queued, then sent by `run()` in the background;
                             a settlement that fails is kept and sent again once Redis is back, so none is lost
    run()                    the settlement sender and the health probe that brings Redis back into use

Settling twice is harmless: a retried settlement whose reservation is already gone is skipped (its first
attempt landed). A request admitted in the process while Redis was down settles there, and its spend is
also queued for Redis, so the shared budget sees it when Redis returns.
"""

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from gateway.errors import LimitsUnavailable
from gateway.limits.counters import Admission, Crossed, LocalBackend, State
from gateway.limits.plan import Planned
from gateway.limits.redis_backend import BackendDown, RedisBackend
from gateway.settings import LimitsSettings

log = logging.getLogger("gateway.limits")
BATCH = 64
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
            try:
                return Held(ticket, planned, await self.redis.admit(counters, ticket), "redis")
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

    def settle(self, held: Held, actual: list[int]) -> None:
        if held.backend == "process":
            crossed = self.local.settle_now([p.counter for p in held.planned], actual, held.ticket)
            self._alert(held.planned, crossed)
            budgets = [(p, a) for p, a in zip(held.planned, actual, strict=True) if p.counter.kind == "budget"]
            if self.redis is None or not budgets:
                return
            # the spend still belongs in the shared budget: a settlement without a reservation
            planned = [replace(p, counter=replace(p.counter, amount=0)) for p, _ in budgets]
            self.pending.append(_Pending(held.ticket, planned, [a for _, a in budgets]))
        else:
            self.pending.append(_Pending(held.ticket, held.planned, actual))
        self._wake.set()

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
        if self.redis is None:
            return
        while True:
            if not self.up:
                await self._probe()
                continue
            if not self.pending:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), PROBE_SECONDS * 10)
                if not self.pending:
                    await self._probe()
                    continue
            await self._send_batch()

    async def _send_batch(self) -> None:
        batch = [self.pending.popleft() for _ in range(min(BATCH, len(self.pending)))]
        self._settling = len(batch)
        try:
            results = await asyncio.gather(*(self._send(item) for item in batch), return_exceptions=True)
        finally:
            self._settling = 0
        failed = [item for item, result in zip(batch, results, strict=True) if isinstance(result, BaseException)]
        for item, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, BackendDown):
                log.error("settlement of %s failed: %s; it is kept and retried", item.ticket, result)
        if failed:
            self.pending.extendleft(reversed(failed))
            error = next(r for r in results if isinstance(r, BaseException))
            self._down(error)

    async def _send(self, item: _Pending) -> None:
        assert self.redis is not None
        item.attempts += 1
        try:
            crossed = await self.redis.settle([p.counter for p in item.planned], item.actual, item.ticket, item.retry)
        except BackendDown as exc:
            # an error while connecting means the script never ran; any other may have run it
            item.retry = item.retry or "connecting" not in str(exc)
            raise
        self._alert(item.planned, crossed)

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
        while self.pending and self.up and time.monotonic() < deadline:
            await self._send_batch()
        if self.pending:
            log.error("%d settlements could not be sent to the limits store before shutdown", len(self.pending))

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
