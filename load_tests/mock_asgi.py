"""Small raw-ASGI helpers for the mock upstream: read a body, send a response, notice or force a disconnect."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

JSON = b"application/json"


class ClientGone(Exception):
    """The client disconnected while a stream was being produced."""


async def read_body(receive: Any) -> bytes:
    """The whole request body."""
    message = await receive()
    body = message.get("body", b"")
    while message.get("more_body"):
        message = await receive()
        body += message.get("body", b"")
    return body


async def respond(send: Any, status: int, body: bytes, extra: Iterable = ()) -> None:
    """One complete JSON response; `extra` adds headers."""
    headers = [(b"content-type", JSON), (b"content-length", b"%d" % len(body)), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def wait_disconnect(receive: Any) -> None:
    """Return once the client has gone away."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def drop_connection(send: Any, disconnected: Callable[[], Awaitable]) -> None:
    """Close the client connection without finishing the response, then await `disconnected()`.

    Under uvicorn the connection's transport is reached through the bound `send`; with another
    server this raises instead, and an exception out of the app makes the server drop the connection.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:
        raise ConnectionAbortedError("mock upstream: injected disconnect")
    transport.close()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(disconnected(), timeout=1)


async def pause(watcher: Any, ms: float) -> None:
    """Sleep `ms` milliseconds, raising ClientGone as soon as the client disconnects."""
    if ms:
        await asyncio.wait({watcher}, timeout=ms / 1000)
    if watcher.done():
        raise ClientGone
