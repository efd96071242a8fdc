"""The script calls' own connection to Redis: commands pipelined on one socket, answered in order.

Every admission and settlement is one EVALSHA; going through redis-py's client costs more CPU than the
scripts themselves (per command: packing in Python, a reply parser behind several awaits, a timeout per
reply; per batch: a task, a pooled connection, a health probe). `Channel` is an asyncio protocol instead:

    send(command)       a future of its answer. Commands sent in one turn of the event loop are written
                        together (one write); `lazy` ones wait up to `lazy_seconds` for company
    replies             parsed by hiredis (C) as they arrive, each resolving the oldest waiting future:
                        Redis answers a connection's commands in order, so no ids are needed
    connecting          redis-py makes the connection from the URL (TCP, unix socket, TLS, AUTH, SELECT,
                        connect timeout); the channel then takes over its transport
    deadline            `timeout` for every command, checked by one timer: a command unanswered past it
                        fails, with every other one waiting, as a redis TimeoutError, and the connection
                        is dropped, so no late answer is read as another command's
    scripts             an EVALSHA the server does not know (restarted, SCRIPT FLUSH) is sent again after
                        its SCRIPT LOAD, transparently: NOSCRIPT means the script never ran

A command Redis answers with an error resolves to that error (a ResponseError) and leaves the others
alone; a lost connection fails every waiting command with a redis ConnectionError, and the next command
connects again. Redis runs one command at a time, so one connection loses nothing to a pool of them.
Everything else (the probe, `gateway budgets` scans, the PII conversations) uses redis-py's client.
"""

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

Arg = str | bytes | int
log = logging.getLogger("gateway.limits")


def pack(command: tuple[Arg, ...]) -> bytes:
    """One command in RESP (hiredis, in C)."""
    return hiredis.pack_command(command)  # type: ignore[arg-type]  # the stub types it as a 1-tuple


class _Waiting:
    """A command written and not yet answered."""

    __slots__ = ("deadline", "future", "orphan", "packed", "resent")

    def __init__(
        self, future: "asyncio.Future[Any]", packed: bytes, orphan: Callable[[Any], None] | None = None
    ) -> None:
        self.future = future
        self.packed = packed
        self.orphan = orphan  # hears the reply if nobody waits for it any more (the caller was cancelled)
        self.deadline = 0.0
        self.resent = False


class _Replies(asyncio.Protocol):
    """The connection's protocol once the channel has taken it over: replies to the waiting commands."""

    def __init__(self, channel: "Channel", transport: asyncio.Transport, writer: asyncio.StreamWriter) -> None:
        self.channel = channel
        self.transport = transport
        self.writer = writer
        self.reader = hiredis.Reader(replyError=ResponseError)
        self.waiting: deque[_Waiting] = deque()

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        try:
            while (reply := self.reader.gets()) is not False:
                if not self.waiting:  # an answer nobody asked for: the stream cannot be trusted any more
                    self.channel.drop(self, RedisConnectionError("Redis sent an answer no command was waiting for"))
                    return
                self._answer(self.waiting.popleft(), reply)
        except hiredis.ProtocolError as exc:
            self.channel.drop(self, RedisConnectionError(f"Redis protocol error: {exc}"))

    def _answer(self, item: _Waiting, reply: Any) -> None:
        if isinstance(reply, ResponseError):
            if str(reply).startswith("NOSCRIPT"):
                if not item.resent and self.channel.resend(item):
                    return
                reply = NoScriptError(str(reply))
            if not item.future.done():
                item.future.set_exception(reply)
        elif not item.future.done():
            item.future.set_result(reply)
        elif item.orphan is not None and item.future.cancelled():
            try:
                item.orphan(reply)
            except Exception:  # its own failure: the replies after it must still reach their commands
                log.exception("handling the answer to an abandoned command failed")

    def connection_lost(self, exc: Exception | None) -> None:
        self.channel.drop(self, RedisConnectionError(f"Connection to Redis lost: {exc or 'closed by the server'}"))


class Channel:
    def __init__(
        self,
        url: str,
        timeout: float,
        connect_timeout: float,
        lazy_seconds: float = 0.005,
        scripts: Mapping[str, str] | None = None,
    ) -> None:
        # a factory only: it makes and sets up the connection, then the channel takes its transport over
        self._factory = aioredis.ConnectionPool.from_url(
            url, socket_connect_timeout=connect_timeout, health_check_interval=0, retry_on_timeout=False
        )
        self.timeout = timeout
        self.lazy_seconds = lazy_seconds
        self.scripts = dict(scripts or {})  # sha1 → source, for EVALSHA answered NOSCRIPT
        self._replies: _Replies | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._queued: list[_Waiting] = []
        self._soon: asyncio.Handle | None = None
        self._later: asyncio.TimerHandle | None = None
        self._watch: asyncio.TimerHandle | None = None

    def send(
        self, command: tuple[Arg, ...], lazy: bool = False, orphan: Callable[[Any], None] | None = None
    ) -> "asyncio.Future[Any]":
        """The future answer to `command`: its reply; it fails with the ResponseError Redis answered, or with
        a redis ConnectionError or TimeoutError. A command whose future is cancelled is still sent (it may be
        on its way already): `orphan` then gets its reply."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queued.append(_Waiting(future, pack(command), orphan))
        if self._soon is None:
            if not lazy:
                self._soon = loop.call_soon(self._flush)
            elif self._later is None:  # at most one such timer: it is not cancelled by an earlier flush
                self._later = loop.call_later(self.lazy_seconds, self._flush_late)
        return future

    async def run(self, commands: list[tuple[Arg, ...]]) -> list[Any]:
        """Each command's answer, or the ResponseError it got, in order (a failed connection raises)."""
        answers = await asyncio.gather(*[self.send(command) for command in commands], return_exceptions=True)
        for answer in answers:
            if isinstance(answer, BaseException) and not isinstance(answer, ResponseError):
                raise answer
        return answers

    def _flush_late(self) -> None:
        self._later = None
        if self._soon is None:
            self._flush()

    def _flush(self) -> None:
        if self._soon is not None:
            self._soon.cancel()
            self._soon = None
        if not self._queued:
            return
        if self._replies is None:
            if self._connecting is None:
                self._connecting = asyncio.get_running_loop().create_task(self._connect())
            return  # written once connected
        batch, self._queued = self._queued, []
        deadline = asyncio.get_running_loop().time() + self.timeout
        for item in batch:
            item.deadline = deadline
        self._replies.waiting.extend(batch)
        self._replies.transport.write(b"".join([item.packed for item in batch]))
        if self._watch is None:
            self._watch = asyncio.get_running_loop().call_at(deadline, self._check_deadline)

    async def _connect(self) -> None:
        conn = self._factory.make_connection()
        try:
            async with asyncio.timeout(self.timeout + 1):
                await conn.connect()
        except BaseException as exc:
            self._connecting = None
            error = exc if isinstance(exc, RedisConnectionError | RedisTimeoutError) else None
            self._fail_queued(error or RedisConnectionError(f"Error connecting to Redis: {exc!r}"))
            await conn.disconnect(nowait=True)
            if not isinstance(exc, Exception):
                raise
            return
        # redis-py made and set the connection up, and has read every answer of its own: the transport is
        # ours now, and redis-py forgets it (so it neither reads from it nor closes it when collected). Its
        # stream writer is kept alive with it: a collected StreamWriter closes its transport.
        writer = conn._writer
        conn._writer = conn._reader = None
        replies = _Replies(self, writer.transport, writer)
        writer.transport.set_protocol(replies)
        self._replies, self._connecting = replies, None
        self._flush()

    def resend(self, item: _Waiting) -> bool:
        """Load the script of an EVALSHA that got NOSCRIPT and send the command again (False: cannot)."""
        sha = _evalsha_of(item.packed)
        source = self.scripts.get(sha) if sha else None
        if source is None or self._replies is None:
            return False
        loaded = asyncio.get_running_loop().create_future()
        loaded.add_done_callback(_ignore)
        item.resent = True
        self._queued[:0] = [_Waiting(loaded, pack(("SCRIPT", "LOAD", source))), item]
        if self._soon is None:
            self._soon = asyncio.get_running_loop().call_soon(self._flush)
        return True

    def _check_deadline(self) -> None:
        self._watch = None
        replies = self._replies
        if replies is None or not replies.waiting:
            return
        oldest = replies.waiting[0].deadline
        now = asyncio.get_running_loop().time()
        if now >= oldest:
            self.drop(replies, RedisTimeoutError(f"Timeout: no answer from Redis within {self.timeout:g}s"))
        else:
            self._watch = asyncio.get_running_loop().call_at(oldest, self._check_deadline)

    def drop(self, replies: _Replies, error: Exception) -> None:
        """Give up a connection: every command waiting on it fails with `error`."""
        if self._replies is replies:
            self._replies = None
        replies.transport.abort()
        while replies.waiting:
            item = replies.waiting.popleft()
            if not item.future.done():
                item.future.set_exception(error)

    def _fail_queued(self, error: Exception) -> None:
        queued, self._queued = self._queued, []
        for item in queued:
            if not item.future.done():
                item.future.set_exception(error)

    async def close(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
        if self._replies is not None:
            self.drop(self._replies, RedisConnectionError("the limits channel is closed"))
        self._fail_queued(RedisConnectionError("the limits channel is closed"))
        for handle in (self._soon, self._later, self._watch):
            if handle is not None:
                handle.cancel()


def _evalsha_of(packed: bytes) -> str | None:
    """The sha1 of a packed EVALSHA command, else None."""
    head = packed[:64]
    if b"EVALSHA" not in head:
        return None
    parts = packed.split(b"\r\n", 7)  # *N, $7, EVALSHA, $40, <sha>, ...
    return parts[4].decode() if len(parts) > 5 and parts[2] == b"EVALSHA" else None


def _ignore(future: "asyncio.Future[Any]") -> None:
    if not future.cancelled():
        future.exception()  # a failed SCRIPT LOAD shows in the EVALSHA it precedes
