"""The one HTTP client the gateway uses to reach model servers, behind a small interface.

Chosen by measurement (load_tests/bench.py): an aiohttp ClientSession with one pooled connector per worker
process. httpx's own transport degrades with concurrency and httpx over the aiohttp transport pays for two
layers of request/response objects; see the benchmark report. Only this module knows which library it is:
its exceptions are mapped in one place, `map_client_exceptions`:

    aiohttp.ClientError / OSError
     ├── ServerTimeoutError, asyncio.TimeoutError  → UpstreamTimeout      (504)
     └── everything else (refused, reset, DNS, TLS) → UpstreamUnreachable  (502)
"""

import functools
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import aiohttp

from gateway.errors import UpstreamTimeout, UpstreamUnreachable
from gateway.settings import Timeouts

CHUNK_SIZE = 64 * 1024


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None
    timeout: Timeouts


class UpstreamResponse:
    """A response whose headers have arrived; read it whole, or iterate it, then close it."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.headers = response.headers

    async def read(self) -> bytes:
        with map_client_exceptions():
            try:
                return await self._response.read()
            finally:
                self._response.release()

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        with map_client_exceptions():
            async for chunk in self._response.content.iter_any():
                yield chunk

    def close(self) -> None:
        """Drop the connection unless the body was read to the end (then it is already back in the pool)."""
        self._response.close()


class UpstreamClient:
    def __init__(self, max_connections: int = 0) -> None:
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=300, keepalive_timeout=30)
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),  # an upstream's cookies must never reach another request
            auto_decompress=True,
            trust_env=False,
        )

    @property
    def ready(self) -> bool:
        return self._session is not None and not self._session.closed

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        assert self._session is not None, "UpstreamClient.start() was not awaited"
        timeout = _client_timeout(request.timeout)
        with map_client_exceptions():
            response = await self._session.request(
                request.method,
                request.url,
                headers=request.headers,
                data=request.body,
                timeout=timeout,
                allow_redirects=False,
            )
        return UpstreamResponse(response)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


@functools.cache
def _client_timeout(timeouts: Timeouts) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=timeouts.total, sock_connect=timeouts.connect, sock_read=timeouts.read)


@contextmanager
def map_client_exceptions() -> Iterator[None]:
    try:
        yield
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise UpstreamTimeout("The model server did not answer in time.") from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise UpstreamUnreachable(f"The model server could not be reached ({type(exc).__name__}).") from exc
