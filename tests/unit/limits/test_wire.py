"""The script calls' connection: packing, answers in order, one deadline, reconnection, scripts reloaded."""

import asyncio
import hashlib

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.limits.wire import Channel, pack
from tests.redis_server import RedisServer


def test_commands_are_packed_as_redis_py_packs_them() -> None:
    from redis.asyncio.connection import Connection

    command = ("EVALSHA", "ab" * 20, 2, "{gw}:rpm:p/r:user=m%C3%BCller", b"\x00raw", "tpm 10 3 60000 0 1 7")
    assert pack(command) == b"".join(Connection().pack_command(*command))
    assert pack(("GET", "é")) == b"*2\r\n$3\r\nGET\r\n$2\r\n\xc3\xa9\r\n"


async def test_a_failed_command_answers_its_error_and_leaves_the_others_alone(redis_server: RedisServer) -> None:
    redis_server.flush()
    channel = Channel(redis_server.url, timeout=1.0, connect_timeout=1.0)
    try:
        answers = await channel.run([("SET", "s", "x"), ("INCR", "s"), ("GET", "s")])
        assert answers[0] == b"OK" and isinstance(answers[1], ResponseError) and answers[2] == b"x"
        with pytest.raises(ResponseError):
            await channel.send(("INCR", "s"))
    finally:
        await channel.close()


async def test_answers_reach_their_own_commands_across_many_concurrent_senders(redis_server: RedisServer) -> None:
    redis_server.flush()
    channel = Channel(redis_server.url, timeout=2.0, connect_timeout=1.0)

    async def one(i: int) -> tuple[int, bytes]:
        await asyncio.sleep((i % 7) / 1000)
        return i, await channel.send(("ECHO", f"answer {i}"))

    try:
        for i, answer in await asyncio.gather(*(one(i) for i in range(500))):
            assert answer == f"answer {i}".encode()
    finally:
        await channel.close()


async def test_a_command_past_its_deadline_fails_and_its_late_answer_reaches_no_one(
    redis_server: RedisServer,
) -> None:
    redis_server.flush()
    channel = Channel(redis_server.url, timeout=0.2, connect_timeout=1.0)
    try:
        with pytest.raises(RedisTimeoutError):
            await channel.run([("BLPOP", "nothing", "1")])  # answers (nil) after 1 s
        assert await channel.run([("PING",)]) == [b"PONG"]  # on a new connection: not the BLPOP's (nil)
        await asyncio.sleep(1.0)  # the abandoned BLPOP's answer would have arrived by now
        assert await channel.send(("ECHO", "still in step")) == b"still in step"
    finally:
        await channel.close()


async def test_a_lost_connection_fails_its_commands_and_the_next_one_connects_again(
    redis_server: RedisServer,
) -> None:
    redis_server.flush()
    channel = Channel(redis_server.url, timeout=2.0, connect_timeout=1.0)
    try:
        assert await channel.send(("CLIENT", "SETNAME", "limits-wire-test")) == b"OK"
        killer = redis_server.client()
        waiting = channel.send(("BLPOP", "nothing", "1"))
        await asyncio.sleep(0.1)
        killer.client_kill_filter(_type="normal", skipme=True)  # every connection but the killer's
        with pytest.raises(RedisConnectionError):
            await waiting
        assert await channel.send(("PING",)) == b"PONG"
    finally:
        await channel.close()


async def test_a_script_the_server_forgot_is_loaded_and_run_again_once(redis_server: RedisServer) -> None:
    redis_server.flush()
    source = "return redis.call('INCR', KEYS[1])"
    sha = hashlib.sha1(source.encode()).hexdigest()
    channel = Channel(redis_server.url, timeout=1.0, connect_timeout=1.0, scripts={sha: source})
    try:
        redis_server.client().script_flush()
        answers = await asyncio.gather(*(channel.send(("EVALSHA", sha, 1, "{gw}:n")) for _ in range(5)))
        assert sorted(answers) == [1, 2, 3, 4, 5]  # each ran exactly once
        unknown = "f" * 40
        with pytest.raises(ResponseError, match="NOSCRIPT"):
            await channel.send(("EVALSHA", unknown, 0))
    finally:
        await channel.close()


async def test_lazy_commands_wait_for_company_but_not_longer_than_their_delay(redis_server: RedisServer) -> None:
    redis_server.flush()
    channel = Channel(redis_server.url, timeout=1.0, connect_timeout=1.0, lazy_seconds=0.2)
    try:
        await channel.send(("PING",))  # connected
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await channel.send(("INCR", "{gw}:lazy"), lazy=True) == 1
        assert loop.time() - started >= 0.15  # it waited
        lazy = channel.send(("INCR", "{gw}:lazy"), lazy=True)
        started = loop.time()
        assert await channel.send(("GET", "{gw}:lazy")) == b"2"  # the eager one took the lazy one along
        assert lazy.done() and loop.time() - started < 0.15
    finally:
        await channel.close()


async def test_an_unreachable_server_fails_the_commands_as_a_connection_error() -> None:
    channel = Channel("redis://127.0.0.1:1/0", timeout=1.0, connect_timeout=0.5)
    try:
        with pytest.raises(RedisConnectionError):
            await channel.send(("PING",))
    finally:
        await channel.close()
