"""The script calls' own connections to Redis: a batch of commands written at once, answered in order.

redis-py's pipeline spends more CPU than the scripts it carries: per command it packs in Python and wraps
every reply in a timeout, per batch it probes the pooled socket and builds a retry closure. The limits
scripts run on every request, so they go through `Channel` instead:

    packing     hiredis (C; redis-py's own packer costs about 13 us per EVALSHA, hiredis 2)
    connections made by redis-py from the URL (TLS, AUTH, SELECT, connect timeout, its reply parser) but
                held here, one batch in flight on each, at most `size` of them
    deadline    one for the whole batch (connecting included); a batch that misses it fails with a
                redis TimeoutError and its connection is closed, so no late answer is read by another batch

A command that fails (e.g. NOSCRIPT) answers its ResponseError and leaves the others alone; a connection
error or the deadline fails the batch. Everything else (peek's callers, scans, the PII conversations) keeps
using redis-py's client.
"""

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from hiredis import pack_command
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

Arg = str | bytes | int


def pack(command: tuple[Arg, ...]) -> bytes:
    """One command in RESP (hiredis, in C)."""
    return pack_command(command)  # type: ignore[arg-type]  # the stub types it as a 1-tuple


class Channel:
    def __init__(self, url: str, timeout: float, connect_timeout: float, size: int) -> None:
        # a factory only: its connections are made and held here, never pooled by redis-py
        self._factory = aioredis.ConnectionPool.from_url(
            url,
            socket_connect_timeout=connect_timeout,
            socket_timeout=None,  # no timeout per reply: the batch has one deadline
            health_check_interval=0,
            retry_on_timeout=False,
        )
        self.timeout = timeout
        self._idle: list[Any] = []
        self._all: list[Any] = []
        self._slots = asyncio.Semaphore(size)

    async def run(self, commands: Sequence[tuple[Arg, ...]]) -> list[Any]:
        """Each command's answer, or the ResponseError it got, in order."""
        packed = b"".join([pack(command) for command in commands])
        try:
            async with asyncio.timeout(self.timeout):
                async with self._slots:
                    return await self._exchange(packed, len(commands))
        except TimeoutError:
            raise RedisTimeoutError(f"Timeout: no answer from Redis within {self.timeout:g}s") from None

    async def _exchange(self, packed: bytes, count: int) -> list[Any]:
        conn = self._idle.pop() if self._idle else self._connection()
        try:
            await conn.send_packed_command(packed, check_health=False)
            return [await _answer(conn) for _ in range(count)]
        except BaseException:
            await conn.disconnect(nowait=True)  # answers may still be on their way: never reuse it
            raise
        finally:
            self._idle.append(conn)

    def _connection(self) -> Any:
        conn = self._factory.make_connection()
        self._all.append(conn)
        return conn

    async def close(self) -> None:
        for conn in self._all:
            await conn.disconnect()
        self._idle.clear()
        self._all.clear()


async def _answer(conn: Any) -> Any:
    try:
        return await conn.read_response()
    except ResponseError as exc:
        return exc
