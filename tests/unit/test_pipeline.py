"""The pipeline runs its stages in order and its final stages exactly once, however a request ends."""

from collections.abc import AsyncIterator

import anyio
import anyio.lowlevel
import pytest

from gateway.errors import GatewayError, NotFound
from gateway.pipeline import Pipeline, RequestContext, Result


def context() -> RequestContext:
    return RequestContext("rid", "chat/completions", {}, b"{}", {}, None)


class Record:
    def __init__(self, log: list[str], name: str, fail: GatewayError | None = None) -> None:
        self.log, self.name, self.fail = log, name, fail

    async def __call__(self, ctx: RequestContext) -> None:
        self.log.append(self.name)
        if self.fail:
            raise self.fail


class Answer:
    def __init__(self, body: bytes | AsyncIterator[bytes], on_close: list[str]) -> None:
        self.body, self.on_close = body, on_close

    async def __call__(self, ctx: RequestContext) -> None:
        ctx.result = Result(200, {}, self.body, lambda: self.on_close.append("closed"))


async def chunks(n: int) -> AsyncIterator[bytes]:
    for i in range(n):
        await anyio.lowlevel.checkpoint()
        yield b"chunk%d" % i


async def test_json_answer_runs_stages_in_order_then_final_once() -> None:
    log: list[str] = []
    pipeline = Pipeline([Record(log, "a"), Record(log, "b"), Answer(b"ok", log)], [Record(log, "final")])
    result = await pipeline(context())
    assert result.body == b"ok"
    assert log == ["a", "b", "final"]


async def test_an_error_stops_the_stages_and_still_runs_final() -> None:
    log: list[str] = []
    ctx = context()
    pipeline = Pipeline([Record(log, "a", NotFound("x")), Record(log, "never")], [Record(log, "final")])
    with pytest.raises(NotFound):
        await pipeline(ctx)
    assert log == ["a", "final"]
    assert isinstance(ctx.error, NotFound)


async def test_a_stream_runs_final_after_its_last_chunk() -> None:
    log: list[str] = []
    ctx = context()
    result = await Pipeline([Answer(chunks(3), log)], [Record(log, "final")])(ctx)
    assert log == []
    assert [c async for c in result.body] == [b"chunk0", b"chunk1", b"chunk2"]  # type: ignore[union-attr]
    assert log == ["closed", "final"]
    assert not ctx.client_disconnected


async def test_an_abandoned_stream_is_closed_marked_and_finalised_even_when_cancelled() -> None:
    log: list[str] = []
    ctx = context()
    result = await Pipeline([Answer(chunks(100), log)], [Record(log, "final")])(ctx)
    with anyio.move_on_after(0.05) as scope:
        async for _ in result.body:  # type: ignore[union-attr]
            await anyio.sleep(0.01)
    assert scope.cancelled_caught
    await result.body.aclose()  # type: ignore[union-attr]
    assert log == ["closed", "final"]
    assert ctx.client_disconnected


class Waits:
    """A final stage that has to wait (as Settle does to count an abandoned stream's tokens off the loop)."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def __call__(self, ctx: RequestContext) -> None:
        self.log.append("waits")
        await anyio.sleep(0.01)
        self.log.append("waited")


async def test_final_stages_that_wait_finish_even_in_a_cancelled_scope() -> None:
    log: list[str] = []
    pipeline = Pipeline([Answer(b"ok", log)], [Record(log, "first"), Waits(log), Record(log, "last")])
    with anyio.CancelScope() as scope:
        scope.cancel()  # as when the client has gone: only the final stages' waits would notice
        await pipeline(context())
    assert log == ["first", "waits", "waited", "last"]


async def test_an_error_after_a_final_stage_waited_is_raised() -> None:
    class FailsLater:
        async def __call__(self, ctx: RequestContext) -> None:
            await anyio.lowlevel.checkpoint()
            raise NotFound("late")

    with pytest.raises(NotFound, match="late"):
        await Pipeline([Answer(b"ok", [])], [FailsLater()])(context())
