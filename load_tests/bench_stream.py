"""Streaming latency: time to first byte and total time of streaming chat completions, with aiohttp.

Time to first byte is measured to the first body bytes (the first SSE event), not to the response
headers, since a proxy may send its headers before the upstream has produced anything.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp
import orjson

from load_tests.bench_wrk import CHAT_BODY

STREAM_BODY = orjson.dumps({**CHAT_BODY, "stream": True, "stream_options": {"include_usage": True}})


@dataclass
class StreamResult:
    target: str
    concurrency: int
    requests: int
    errors: int
    ttfb_p50_ms: float
    ttfb_p99_ms: float
    total_p50_ms: float
    total_p99_ms: float
    foreign_cpu: float = float("nan")
    server_cpu: float = float("nan")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of `values` (NaN if empty)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


async def one_stream(session: aiohttp.ClientSession, url: str, headers: dict) -> tuple[float, float] | None:
    """(ttfb ms, total ms) of one streaming request, or None if it failed or did not end with [DONE]."""
    start = time.perf_counter()
    async with session.post(url, data=STREAM_BODY, headers=headers) as response:
        first = await response.content.readany()
        ttfb = time.perf_counter() - start
        rest = await response.content.read()
        total = time.perf_counter() - start
    if response.status != 200 or b"[DONE]" not in first + rest:
        return None
    return ttfb * 1000, total * 1000


async def worker(session: aiohttp.ClientSession, url: str, headers: dict, count: int, out: list) -> None:
    for _ in range(count):
        try:
            out.append(await one_stream(session, url, headers))
        except (TimeoutError, aiohttp.ClientError):
            out.append(None)


async def measure_async(url: str, headers: dict, concurrency: int, per_worker: int) -> list:
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await worker(session, url, headers, 3, [])  # warm the connection pool
        out: list = []
        await asyncio.gather(*(worker(session, url, headers, per_worker, out) for _ in range(concurrency)))
        return out


def measure(url: str, headers: dict, target: str, concurrency: int, total_requests: int) -> StreamResult:
    """Send `total_requests` streaming requests from `concurrency` concurrent workers."""
    per_worker = max(1, total_requests // concurrency)
    outcomes = asyncio.run(measure_async(url, {"content-type": "application/json", **headers}, concurrency, per_worker))
    good = [o for o in outcomes if o is not None]
    ttfb, total = [o[0] for o in good], [o[1] for o in good]
    return StreamResult(
        target=target,
        concurrency=concurrency,
        requests=len(outcomes),
        errors=len(outcomes) - len(good),
        ttfb_p50_ms=percentile(ttfb, 0.5),
        ttfb_p99_ms=percentile(ttfb, 0.99),
        total_p50_ms=percentile(total, 0.5),
        total_p99_ms=percentile(total, 0.99),
    )
