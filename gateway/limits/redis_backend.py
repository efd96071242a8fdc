"""The Redis backend: every admission, settlement and peek is one EVALSHA of a script loaded once.

Calls made in the same turn of the event loop (concurrent requests) leave together, as one pipeline: one
write and one read for the lot, instead of one round trip each; a lone call goes alone. Settlements are
lazy: nobody waits for them, so they ride along with the next admission's pipeline, or leave on their own
after LAZY_SECONDS, whichever comes first; a busy gateway thus pays about one round trip per request.
The scripts travel over `wire.Channel` (one pipelined connection, replies parsed by hiredis as they come);
redis-py's client is kept for the probe, `gateway budgets` scans and the PII conversations.

When the server has forgotten the scripts (a restart, SCRIPT FLUSH) the channel loads the script of a call
that got NOSCRIPT and runs it again, so a restarted Redis needs nothing from us. Connection errors and
timeouts surface as `BackendDown`; the limits service decides what that means (fail open or closed, retry later).
"""

import asyncio
import functools
import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.limits import scripts
from gateway.limits.counters import Admission, Counter, Crossed, State
from gateway.limits.wire import Channel

LAZY_SECONDS = 0.005
KEEP_MS = 40 * 24 * 3600 * 1000  # a budget period's counters outlive it by 40 days, for `gateway budgets`


class BackendDown(Exception):
    """Redis could not be reached or did not answer in time."""


class RedisBackend:
    def __init__(self, url: str, timeout: float, pool_size: int = 64) -> None:
        # a blocking pool: a burst beyond `pool_size` waits for a connection instead of failing
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=pool_size,
            timeout=max(timeout, 1.0),
            socket_connect_timeout=timeout,
            socket_timeout=max(timeout, 1.0),
            health_check_interval=0,
            retry_on_timeout=False,
        )
        self.client = aioredis.Redis(connection_pool=pool)  # pings, scans, and the PII conversations
        self.sources = {name: getattr(scripts, name) for name in ("ADMIT", "SETTLE", "PEEK")}
        self.shas = {name: hashlib.sha1(source.encode()).hexdigest() for name, source in self.sources.items()}
        by_sha = {self.shas[name]: source for name, source in self.sources.items()}
        self.channel = Channel(url, max(timeout, 1.0), timeout, LAZY_SECONDS, by_sha)  # the scripts

    async def ping(self) -> None:
        await self._call(self.client.ping())

    async def close(self) -> None:
        await self.channel.close()
        await self.client.aclose()
        await self.client.connection_pool.disconnect()

    async def admit(
        self, counters: list[Counter], ticket: str, abandoned: Callable[[Admission], None] | None = None
    ) -> Admission:
        """`abandoned` hears the admission if the caller is cancelled while it is on its way (the script runs
        anyway: whatever it took must be given back)."""
        args = [ticket]
        for c in counters:
            args.append(f"{c.kind} {c.limit} {c.amount} {c.window_ms} {c.expire_at_ms} {int(c.enforce)} {KEEP_MS}")
        orphan = None if abandoned is None else functools.partial(_orphaned, len(counters), abandoned)
        answer = self._eval("ADMIT", _keys(counters), args, orphan=orphan)
        try:
            return admission_of(await self._call(answer), len(counters))
        except asyncio.CancelledError:  # answered already, but cancelled before it could resume: the same
            if abandoned is not None and answer.done() and not answer.cancelled() and answer.exception() is None:
                abandoned(admission_of(answer.result(), len(counters)))
            raise

    async def settle(self, counters: list[Counter], actual: list[int], ticket: str, retry: bool) -> list[Crossed]:
        return crossed_of(await self._call(self.settle_later(counters, actual, ticket, retry)))

    def settle_later(
        self, counters: list[Counter], actual: list[int], ticket: str, retry: bool
    ) -> "asyncio.Future[Any]":
        """The settlement as a future of the script's raw answer (see `crossed_of`), sent lazily: a request
        never waits for it, and no task is made for it."""
        args = [ticket, str(int(retry))]
        for c, real in zip(counters, actual, strict=True):
            alerts = ",".join(map(str, c.alerts)) if c.alerts else "-"
            args.append(f"{c.kind} {c.amount} {real} {c.expire_at_ms} {KEEP_MS} {alerts}")
        return self._eval("SETTLE", _keys(counters), args, lazy=True)

    async def peek(self, counters: list[Counter]) -> list[State]:
        args = [f"{c.kind} {c.window_ms} {c.expire_at_ms}" for c in counters]
        out = [int(x) for x in await self._call(self._eval("PEEK", _keys(counters), args))]
        return [State(out[2 * i], out[2 * i + 1]) for i in range(len(counters))]

    async def scan(self, pattern: str) -> list[tuple[str, dict[str, int]]]:
        """Budget hashes matching `pattern`, with their fields (for `gateway budgets`)."""
        found = []
        async for key in self.client.scan_iter(match=pattern, count=500):
            if key.endswith(b":aux"):  # a budget's reservations (a sorted set), not a budget
                continue
            fields = await self._call(self.client.hgetall(key))
            found.append((key.decode(), {k.decode(): int(v) for k, v in fields.items()}))
        return sorted(found)

    def _eval(
        self,
        name: str,
        keys: list[str],
        args: list[str],
        lazy: bool = False,
        orphan: Callable[[Any], None] | None = None,
    ) -> "asyncio.Future[Any]":
        """EVALSHA `name`: calls made in this turn of the loop leave together; a lazy one waits for company;
        `orphan` hears the answer if the caller was cancelled (see wire.Channel.send)."""
        return self.channel.send(("EVALSHA", self.shas[name], len(keys), *keys, *args), lazy, orphan)

    async def _call(self, awaitable: Any) -> Any:
        try:
            return await awaitable
        except (RedisError, OSError) as exc:  # e.g. a server that is still loading its data after a restart
            if is_down(exc):
                raise BackendDown(f"{type(exc).__name__}: {exc}") from exc
            raise


def admission_of(answer: list[Any], count: int) -> Admission:
    """The ADMIT script's answer for `count` counters."""
    out = list(map(int, answer))
    end = 3 + 2 * count
    states = tuple(map(State, out[3:end:2], out[4:end:2]))
    over = tuple(i - 1 for i in out[end:])
    refused = out[1] - 1 if out[1] else None
    return Admission(bool(out[0]), refused, out[2], states, over)


def _orphaned(count: int, abandoned: Callable[[Admission], None], answer: Any) -> None:
    if isinstance(answer, list):
        abandoned(admission_of(answer, count))


def crossed_of(answer: list[Any]) -> list[Crossed]:
    out = [int(x) for x in answer]
    return [Crossed(out[i] - 1, out[i + 1], out[i + 2]) for i in range(0, len(out), 3)]


def is_down(exc: BaseException) -> bool:
    """Whether `exc` means Redis is unreachable (rather than a script error)."""
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError | BackendDown):
        return True
    return isinstance(exc, RedisError) and ("LOADING" in str(exc) or "BUSY" in str(exc))


def _keys(counters: Sequence[Counter]) -> list[str]:
    keys: list[str] = []
    for c in counters:
        keys += [c.key, c.key + ":aux"]
    return keys
