"""The "bare pass-through" baseline: the least a Python proxy can do per request, to measure the gateway against.

One Starlette route, `POST /v1/chat/completions`, forwards the raw body to `UPSTREAM/v1/chat/completions`
through one shared pooled client and returns the upstream's status, body and content type. The client is
selectable so the benchmark can compare them: `aiohttp` (a ClientSession), `httpx-aiohttp` (httpx over
that same session) or `httpx` (httpx's default transport).

Run: `python -m load_tests.bare_proxy --port 9001 --upstream http://127.0.0.1:9000 --client aiohttp`.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import httpx
import httpx_aiohttp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

CLIENTS = ("aiohttp", "httpx-aiohttp", "httpx")
Forward = Callable[[bytes, dict], Awaitable[tuple[int, bytes, str]]]


def aiohttp_forwarder(session: aiohttp.ClientSession, url: str) -> Forward:
    async def forward(body: bytes, headers: dict) -> tuple[int, bytes, str]:
        async with session.post(url, data=body, headers=headers) as upstream:
            return upstream.status, await upstream.read(), upstream.headers.get("content-type", "")

    return forward


def httpx_forwarder(client: httpx.AsyncClient, url: str) -> Forward:
    async def forward(body: bytes, headers: dict) -> tuple[int, bytes, str]:
        upstream = await client.post(url, content=body, headers=headers)
        return upstream.status_code, upstream.content, upstream.headers.get("content-type", "")

    return forward


@contextlib.asynccontextmanager
async def pooled_forwarder(client: str, url: str) -> AsyncIterator[Forward]:
    """One shared, pooled upstream client for the app's lifetime."""
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
    async with aiohttp.ClientSession(connector=connector) as session:
        if client == "aiohttp":
            yield aiohttp_forwarder(session, url)
            return
        transport = httpx_aiohttp.AiohttpTransport(client=session) if client == "httpx-aiohttp" else None
        async with httpx.AsyncClient(transport=transport, limits=limits, timeout=60) as http:
            yield httpx_forwarder(http, url)


def build_app(upstream: str, client: str = "aiohttp") -> Starlette:
    url = upstream.rstrip("/") + "/v1/chat/completions"

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with pooled_forwarder(client, url) as forward:
            app.state.forward = forward
            yield

    async def chat(request: Request) -> Response:
        headers = {"content-type": "application/json"}
        if "authorization" in request.headers:
            headers["authorization"] = request.headers["authorization"]
        status, body, content_type = await request.app.state.forward(await request.body(), headers)
        return Response(body, status_code=status, media_type=content_type or None)

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])], lifespan=lifespan)


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--upstream", default="http://127.0.0.1:9000")
    parser.add_argument("--client", choices=CLIENTS, default="aiohttp")
    args = parser.parse_args(argv)
    app = build_app(args.upstream, args.client)
    uvicorn.run(
        app, host=args.host, port=args.port, loop="uvloop", http="httptools", log_level="warning", access_log=False
    )


if __name__ == "__main__":
    main()
