"""Pure ASGI middleware for what cuts across every route: request ids and limits on what clients send.

- RequestIdMiddleware: `x-request-id` from the client (if sane) or a new one; on every response.
- RequestLimitsMiddleware: header count and size (431), declared or actual body size (413), a body that
  arrives too slowly (408). It reads the body once, within those limits, leaves it in `scope["state"]["body"]`
  and replays it to the app; later `receive()` calls go to the server so the app still hears a disconnect.
"""

import asyncio
import re
import uuid
from collections.abc import Callable, MutableMapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import GatewayError, HeadersTooLarge, InvalidRequest, PayloadTooLarge, RequestTimeout
from gateway.settings import ServerLimits

SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _client_request_id(scope) or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        await self.app(scope, receive, send_with_id)


def _client_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if SANE_REQUEST_ID.match(text) else None
    return None


class RequestLimitsMiddleware:
    """`on_refused(scope, error)` hears every request refused here (the audit trail records them too)."""

    def __init__(
        self, app: ASGIApp, limits: ServerLimits, on_refused: Callable[[Scope, GatewayError], None] | None = None
    ) -> None:
        self.app = app
        self.limits = limits
        self.on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            self._check_headers(scope["headers"])
            body = await self._read_body(scope, receive) if scope["method"] in ("POST", "PUT", "PATCH") else b""
        except GatewayError as exc:
            await send_error(send, exc)
            if self.on_refused is not None:
                self.on_refused(scope, exc)
            return
        scope.setdefault("state", {})["body"] = body
        await self.app(scope, _replay(body, receive), send)

    def _check_headers(self, headers: list[tuple[bytes, bytes]]) -> None:
        if (
            len(headers) > self.limits.max_headers
            or len(b"".join(map(b"".join, headers))) > self.limits.max_header_bytes
        ):
            raise HeadersTooLarge(
                f"Too many or too large headers (at most {self.limits.max_headers} headers, "
                f"{self.limits.max_header_bytes} bytes)."
            )

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        declared = _content_length(scope["headers"])
        if declared is not None and declared > self.limits.max_body_bytes:
            raise _too_large(self.limits.max_body_bytes)
        chunks, size = [], 0
        try:
            async with asyncio.timeout(self.limits.body_timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise InvalidRequest("The client went away before sending its whole body.")
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.limits.max_body_bytes:
                        raise _too_large(self.limits.max_body_bytes)
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            raise RequestTimeout(f"The request body did not arrive within {self.limits.body_timeout:g}s.") from None


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body is larger than the limit of {limit} bytes.")


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    replayed = False

    async def replay() -> MutableMapping[str, Any]:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def send_error(send: Send, exc: GatewayError) -> None:
    body = exc.render()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if exc.status in (408, 413, 431):
        headers.append((b"connection", b"close"))
    headers.extend((name.encode(), value.encode("latin-1")) for name, value in exc.headers.items())
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
