"""The Redis backend: every admission, settlement and peek is one EVALSHA of a script registered once.

redis-py's `Script` sends EVALSHA and, when the server has forgotten the script (a restart, SCRIPT FLUSH),
loads it again and retries, so a restarted Redis needs nothing from us. Connection errors and timeouts
surface as `BackendDown`; the limits service decides what that means (fail open or closed, retry later).
"""

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.limits import scripts
from gateway.limits.counters import Admission, Counter, Crossed, State

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
        self.client = aioredis.Redis(connection_pool=pool)
        self._admit = self.client.register_script(scripts.ADMIT)
        self._settle = self.client.register_script(scripts.SETTLE)
        self._peek = self.client.register_script(scripts.PEEK)

    async def ping(self) -> None:
        await self._call(self.client.ping())

    async def close(self) -> None:
        await self.client.aclose()
        await self.client.connection_pool.disconnect()

    async def admit(self, counters: list[Counter], ticket: str) -> Admission:
        args: list[Any] = [ticket, len(counters)]
        for c in counters:
            args += [c.kind, c.limit, c.amount, c.window_ms, c.expire_at_ms, int(c.enforce), KEEP_MS]
        out = [int(x) for x in await self._call(self._admit(keys=_keys(counters), args=args))]
        n = len(counters)
        states = tuple(State(out[3 + 2 * i], out[4 + 2 * i]) for i in range(n))
        over = tuple(i - 1 for i in out[3 + 2 * n :])
        refused = out[1] - 1 if out[1] else None
        return Admission(bool(out[0]), refused, out[2], states, over)

    async def settle(self, counters: list[Counter], actual: list[int], ticket: str, retry: bool) -> list[Crossed]:
        args: list[Any] = [ticket, int(retry), len(counters)]
        for c, real in zip(counters, actual, strict=True):
            args += [c.kind, c.amount, real, c.expire_at_ms, KEEP_MS, ",".join(map(str, c.alerts))]
        out = [int(x) for x in await self._call(self._settle(keys=_keys(counters), args=args))]
        return [Crossed(out[i] - 1, out[i + 1], out[i + 2]) for i in range(0, len(out), 3)]

    async def peek(self, counters: list[Counter]) -> list[State]:
        args: list[Any] = [len(counters)]
        for c in counters:
            args += [c.kind, c.window_ms, c.expire_at_ms]
        out = [int(x) for x in await self._call(self._peek(keys=_keys(counters), args=args))]
        return [State(out[2 * i], out[2 * i + 1]) for i in range(len(counters))]

    async def scan(self, pattern: str) -> list[tuple[str, dict[str, int]]]:
        """Budget hashes matching `pattern`, with their fields (for `gateway budgets`)."""
        found = []
        async for key in self.client.scan_iter(match=pattern, count=500):
            fields = await self._call(self.client.hgetall(key))
            found.append((key.decode(), {k.decode(): int(v) for k, v in fields.items()}))
        return sorted(found)

    async def _call(self, awaitable: Any) -> Any:
        try:
            return await awaitable
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise BackendDown(f"{type(exc).__name__}: {exc}") from exc
        except RedisError as exc:  # e.g. a server that is loading its data after a restart
            if "LOADING" in str(exc) or "BUSY" in str(exc):
                raise BackendDown(str(exc)) from exc
            raise


def _keys(counters: Sequence[Counter]) -> list[str]:
    keys: list[str] = []
    for c in counters:
        keys += [c.key, c.key + ":aux"]
    return keys
