"""What the backends count, and the in-process backend.

A request's admission is a list of `Counter`s, checked and taken together, atomically: either every
enforced counter has room and all are taken, or none is. Four kinds, all keyed by a string that names the
rule and the scope (the same key in every process and replica):

    rpm          sliding log of admissions over the last 60 s (exact: at most `limit` in ANY 60 s)
    tpm          sliding log of (admission, tokens) over the last 60 s; admitted on an estimate, the entry
                 is corrected to the real usage when the request settles
    concurrent   leases: one per request in flight, released when it settles, expiring after `window_ms`
                 (so a crashed worker's slots come back)
    budget       spent + reserved micro-USD in a calendar period; a request reserves its maximum cost (a
                 lease too), settles its real cost, and the rest of the reservation is released

A counter that is not enforced (a shadow rule) is counted but never refuses; it is reported when over.
`LocalBackend` keeps all of this in the process (exact within one process): the embedded default, and the
fail-open fallback when Redis is unreachable. `RedisBackend` (gateway.limits.redis) runs the same algorithm
as Lua scripts, shared by every worker and replica.
"""

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Literal, Protocol

Kind = Literal["rpm", "tpm", "concurrent", "budget"]
WINDOW_MS = 60_000

# Counter, State and Admission are built for every request, several times over: they are plain (slots, not
# frozen) dataclasses, which build five times faster than frozen ones (0.35 us against 1.8 us). Nothing
# changes them once built; a plan's unchanging counters are even shared by every request (plan.Planner).


@dataclass(slots=True)
class Counter:
    kind: Kind
    key: str
    limit: int
    amount: int  # 1 request, tokens, or micro-USD reserved
    window_ms: int = WINDOW_MS  # the sliding window, or the lease of a slot or a reservation
    expire_at_ms: int = 0  # budget: the end of its period (the key is kept a while after, for reports)
    enforce: bool = True
    alerts: tuple[int, ...] = ()  # budget: soft thresholds in micro-USD


@dataclass(slots=True)
class State:
    """A counter after admission (or as peeked): what is used, and ms until it has room again / fully resets."""

    used: int
    reset_ms: int


@dataclass(slots=True)
class Admission:
    ok: bool
    refused: int | None = None  # index of the first enforced counter without room
    retry_after_ms: int = 0  # -1: never (the request alone exceeds the limit)
    states: tuple[State, ...] = ()
    over: tuple[int, ...] = ()  # indexes of counters over their limit (shadow ones included)


@dataclass(frozen=True, slots=True)
class Crossed:
    """A budget's soft threshold crossed by a settlement (reported once per period)."""

    index: int
    threshold: int
    spent: int


class Backend(Protocol):
    async def admit(self, counters: list[Counter], ticket: str) -> Admission: ...

    async def settle(self, counters: list[Counter], actual: list[int], ticket: str, retry: bool) -> list[Crossed]: ...

    async def peek(self, counters: list[Counter]) -> list[State]: ...


@dataclass
class _Log:
    """Admissions in time order, (ms, ticket, amount) each. Tuples of plain values are not tracked by the
    garbage collector, so a minute of admissions costs the collector nothing; TPM corrections live in `live`."""

    entries: deque[tuple[int, str, int]] = field(default_factory=deque)
    live: dict[str, int] = field(default_factory=dict)  # tpm: ticket → its amount now (corrected)
    total: int = 0

    def purge(self, upto: int) -> None:
        while self.entries and self.entries[0][0] <= upto:
            _, ticket, amount = self.entries.popleft()
            self.total -= self.live.pop(ticket, amount)

    def add(self, at: int, ticket: str, amount: int, correctable: bool) -> None:
        self.entries.append((at, ticket, amount))
        if correctable:
            self.live[ticket] = amount
        self.total += amount


@dataclass
class _Budget:
    spent: int = 0
    reserved: int = 0
    leases: dict[str, tuple[int, int]] = field(default_factory=dict)  # ticket → (expiry ms, amount)
    alerted: set[int] = field(default_factory=set)
    expire_at_ms: int = 0

    def purge(self, now: int) -> None:
        leases = self.leases
        while leases:  # oldest first (see _expire): only what has expired is looked at
            ticket = next(iter(leases))
            expiry, amount = leases[ticket]
            if expiry > now:
                return
            del leases[ticket]
            self.reserved -= amount


def _expire(leases: dict[str, int], now: int) -> None:
    """Drop the expired leases of a counter, oldest first. A dict keeps insertion order, and every lease of a
    counter lasts the same `window_ms`, so the first one is the next to expire: an admission costs the leases
    that expired, not every lease in flight (a clock stepped back, or a new lease_seconds, only delays the
    expiry of leases taken after; leases are for requests that never settled, such as a crashed worker's)."""
    while leases:
        ticket = next(iter(leases))
        if leases[ticket] > now:
            return
        del leases[ticket]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class LocalBackend:
    """The algorithm in the process: exact within it, shared by nothing. Idle state is swept every minute."""

    SWEEP_MS = 60_000

    def __init__(self) -> None:
        self.logs: dict[str, _Log] = {}
        self.leases: dict[str, dict[str, int]] = {}
        self.budgets: dict[str, _Budget] = {}
        self._swept = now_ms()

    async def admit(self, counters: list[Counter], ticket: str) -> Admission:
        return self.admit_now(counters, ticket, now_ms())

    def admit_now(self, counters: list[Counter], ticket: str, now: int) -> Admission:
        self._sweep(now)
        checks = [self._check(c, now) for c in counters]
        over = tuple(i for i, (ok, _, _) in enumerate(checks) if not ok)
        refused = next((i for i in over if counters[i].enforce), None)
        if refused is not None:
            retry = checks[refused][2]
            states = tuple(State(used, retry) for _, used, _ in checks)
            return Admission(False, refused, retry, states, over)
        states = tuple(self._take(c, ticket, now, used) for c, (_, used, _) in zip(counters, checks, strict=True))
        return Admission(True, None, 0, states, over)

    def _check(self, c: Counter, now: int) -> tuple[bool, int, int]:
        """(has room, used before this request, ms until it has room)."""
        if c.kind == "budget":
            budget = self.budgets.get(c.key)
            if budget is None:
                budget = self.budgets[c.key] = _Budget(expire_at_ms=c.expire_at_ms)
            budget.purge(now)
            used = budget.spent + budget.reserved
            return used + c.amount <= c.limit, used, max(0, c.expire_at_ms - now)
        if c.kind == "concurrent":
            leases = self.leases.get(c.key)
            if leases is None:
                leases = self.leases[c.key] = {}
            _expire(leases, now)
            return len(leases) + 1 <= c.limit, len(leases), 1000
        log = self.logs.get(c.key)
        if log is None:
            log = self.logs[c.key] = _Log()
        log.purge(now - c.window_ms)
        used = log.total if c.kind == "tpm" else len(log.entries)
        if used + c.amount <= c.limit:
            return True, used, 0
        if c.amount > c.limit:
            return False, used, -1
        freed = 0
        for at, owner, amount in log.entries:
            freed += log.live.get(owner, amount) if c.kind == "tpm" else 1
            if used - freed + c.amount <= c.limit:
                return False, used, at + c.window_ms - now
        return False, used, c.window_ms

    def _take(self, c: Counter, ticket: str, now: int, used: int) -> State:
        if c.kind == "budget":
            budget = self.budgets[c.key]
            budget.leases[ticket] = (now + c.window_ms, c.amount)
            budget.reserved += c.amount
            return State(used + c.amount, max(0, c.expire_at_ms - now))
        if c.kind == "concurrent":
            self.leases[c.key][ticket] = now + c.window_ms
            return State(used + 1, 0)
        log = self.logs[c.key]
        log.add(now, ticket, c.amount if c.kind == "tpm" else 1, c.kind == "tpm")
        return State(used + c.amount, log.entries[0][0] + c.window_ms - now)

    async def settle(self, counters: list[Counter], actual: list[int], ticket: str, retry: bool) -> list[Crossed]:
        return self.settle_now(counters, actual, ticket, retry)

    def settle_now(self, counters: list[Counter], actual: list[int], ticket: str, retry: bool = False) -> list[Crossed]:
        crossed: list[Crossed] = []
        for index, (c, real) in enumerate(zip(counters, actual, strict=True)):
            if c.kind == "concurrent":
                self.leases.get(c.key, {}).pop(ticket, None)
            elif c.kind == "tpm":
                self._correct(self.logs.get(c.key), ticket, real)
            elif c.kind == "budget":
                budget = self.budgets.setdefault(c.key, _Budget(expire_at_ms=c.expire_at_ms))
                lease = budget.leases.pop(ticket, None)
                if lease is not None:
                    budget.reserved -= lease[1]
                if lease is not None or not retry:
                    budget.spent += real
                for threshold in c.alerts:
                    if budget.spent >= threshold and threshold not in budget.alerted:
                        budget.alerted.add(threshold)
                        crossed.append(Crossed(index, threshold, budget.spent))
        return crossed

    @staticmethod
    def _correct(log: _Log | None, ticket: str, real: int) -> None:
        if log is not None and ticket in log.live:
            log.total += real - log.live[ticket]
            log.live[ticket] = real

    async def peek(self, counters: list[Counter]) -> list[State]:
        now = now_ms()
        states = []
        for c in counters:
            _, used, _ = self._check(c, now)
            log = self.logs.get(c.key)
            if c.kind in ("rpm", "tpm") and log is not None and log.entries:
                reset = log.entries[-1][0] + c.window_ms - now
            else:
                reset = max(0, c.expire_at_ms - now) if c.kind == "budget" else 0
            states.append(State(used, reset))
        return states

    def _sweep(self, now: int) -> None:
        if now - self._swept < self.SWEEP_MS:
            return
        self._swept = now
        for key, log in list(self.logs.items()):
            log.purge(now - WINDOW_MS)
            if not log.entries:
                del self.logs[key]
        for key, leases in list(self.leases.items()):
            if all(expiry <= now for expiry in leases.values()):
                del self.leases[key]
        for key, budget in list(self.budgets.items()):
            if budget.expire_at_ms and budget.expire_at_ms <= now and not budget.leases:
                del self.budgets[key]
