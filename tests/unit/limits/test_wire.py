"""The script calls' connections: packing, one answer per command in order, one deadline per batch."""

import pytest
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
    channel = Channel(redis_server.url, timeout=1.0, connect_timeout=1.0, size=4)
    try:
        answers = await channel.run([("SET", "s", "x"), ("INCR", "s"), ("GET", "s")])
        assert answers[0] == b"OK" and isinstance(answers[1], ResponseError) and answers[2] == b"x"
    finally:
        await channel.close()


async def test_a_batch_past_its_deadline_fails_and_its_late_answer_reaches_no_one(redis_server: RedisServer) -> None:
    redis_server.flush()
    channel = Channel(redis_server.url, timeout=0.2, connect_timeout=1.0, size=1)
    try:
        with pytest.raises(RedisTimeoutError):
            await channel.run([("BLPOP", "nothing", "1")])  # answers (nil) after 1 s
        assert await channel.run([("PING",)]) == [b"PONG"]  # on a new connection: not the BLPOP's (nil)
    finally:
        await channel.close()
