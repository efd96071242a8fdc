"""Soak: steady mixed traffic through the gateway, watching its memory, descriptors and upstream streams.

`python -m load_tests.soak [--duration 120] [--concurrency 32] [--out load_tests/reports/soak-<date>.md]`

Starts the mock upstream and the gateway (each pinned to a core, on loopback), then for `--duration` seconds
keeps `--concurrency` clients busy with a fixed mix: plain chat completions, complete streams, streams the
client abandons after the first chunk (the upstream must see them cancelled), and refused requests (unknown
model, malformed JSON). Every `--every` seconds it samples the gateway's RSS, open descriptors and TCP
connections. `--limits redis|memory` also puts every request under rate limits and a budget that never
refuse (counted in a redis-server started here, on core 1, whose RSS is sampled too, or in the process):
their sliding windows hold a minute of admissions, so memory must level off after the first minute. A leak
shows as a column that keeps growing; the report ends with the mock's stream counters, which must show no
stream left open. Bounded in time, loopback only, stops what it started by PID.
"""

import argparse
import asyncio
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import aiohttp
import psutil

from load_tests import bench_procs as procs
from load_tests.bench import LIMIT_POLICIES

UPSTREAM_KEY = "sk-mock"
GATEWAY_YAML = """\
models:
  - {{name: mock-model, provider: openai_compatible, base_url: "{mock}/v1", api_key: env:MOCK_UPSTREAM_KEY}}
  - {{name: slow-model, provider: openai_compatible, base_url: "{mock}/v1", api_key: env:MOCK_UPSTREAM_KEY}}
"""
CHAT = b'{"model":"mock-model","messages":[{"role":"user","content":"soak test message"}]}'
STREAM = b'{"model":"mock-model","stream":true,"messages":[{"role":"user","content":"soak stream"}]}'
ABANDON = b'{"model":"slow-model","stream":true,"messages":[{"role":"user","content":"' + b"word " * 40 + b'"}]}'
MIX = ["chat"] * 5 + ["stream"] * 2 + ["abandon"] * 2 + ["unknown_model", "bad_json"]


async def one(session: aiohttp.ClientSession, url: str, kind: str, counts: dict[str, int]) -> None:
    body = {"chat": CHAT, "stream": STREAM, "abandon": ABANDON, "bad_json": b"{nope"}.get(kind)
    if kind == "unknown_model":
        body = CHAT.replace(b"mock-model", b"no-such-model")
    async with session.post(url, data=body, headers={"content-type": "application/json"}) as response:
        if kind == "abandon":
            await response.content.readany()  # the first chunk, then walk away mid-stream
            response.close()
        else:
            await response.read()
        counts[f"{kind} {response.status}"] = counts.get(f"{kind} {response.status}", 0) + 1


async def client(url: str, key: str, until: float, counts: dict[str, int], start: int) -> None:
    headers = {"authorization": f"Bearer {key}"}
    kinds = itertools.islice(itertools.cycle(MIX), start, None)
    async with aiohttp.ClientSession(headers=headers) as session:
        for kind in kinds:
            if time.monotonic() >= until:
                return
            try:
                await one(session, url, kind, counts)
            except aiohttp.ClientError as exc:
                counts[f"{kind} {type(exc).__name__}"] = counts.get(f"{kind} {type(exc).__name__}", 0) + 1


def sample(pid: int, upstream_port: int, redis_pid: int | None = None) -> dict[str, int]:
    process = psutil.Process(pid)
    upstream = [c for c in process.net_connections("tcp") if c.raddr and c.raddr.port == upstream_port]
    values = {"rss_kb": procs.rss_kb(pid), "fds": process.num_fds(), "upstream_conns": len(upstream)}
    if redis_pid is not None:
        values["redis_rss_kb"] = procs.rss_kb(redis_pid)
    return values


async def soak(
    args: argparse.Namespace, gateway: procs.Server, mock: procs.Server, key: str, redis: procs.Server | None
) -> list[str]:
    mock_port = int(mock.url.rsplit(":", 1)[1])
    redis_pid = redis.pid if redis is not None else None

    def sample_now() -> str:
        return _cells(sample(gateway.pid, mock_port, redis_pid))

    rows = [f"| 0 | idle | {sample_now()} |"]
    counts: dict[str, int] = {}
    began = time.monotonic()
    until = began + args.duration
    url = gateway.url + "/v1/chat/completions"
    clients = [asyncio.create_task(client(url, key, until, counts, i)) for i in range(args.concurrency)]
    while time.monotonic() < until:
        await asyncio.sleep(min(args.every, max(0.0, until - time.monotonic())))
        done = sum(counts.values())
        rows.append(f"| {time.monotonic() - began:.0f} | {done:,} | {sample_now()} |")
        print(rows[-1], flush=True)
    await asyncio.gather(*clients)
    await asyncio.sleep(3)
    rows.append(f"| +3 s quiet | {sum(counts.values()):,} | {sample_now()} |")
    tally = ", ".join(f"{kind}: {n:,}" for kind, n in sorted(counts.items()))
    return [*rows, "", f"Responses by kind and status: {tally}"]


def _cells(values: dict[str, int]) -> str:
    cells = f"{values['rss_kb'] / 1024:.1f} | {values['fds']} | {values['upstream_conns']}"
    return cells + (f" | {values['redis_rss_kb'] / 1024:.1f}" if "redis_rss_kb" in values else "")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=120)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--every", type=float, default=10)
    parser.add_argument("--chunk-delay-ms", type=float, default=20, help="mock delay between chunks of slow-model")
    parser.add_argument(
        "--limits", choices=("off", "redis", "memory"), default="off", help="rate limits and a budget on every request"
    )
    parser.add_argument("--out", type=Path, default=Path(f"load_tests/reports/soak-{datetime.now():%Y-%m-%d}.md"))
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="gateway-soak-"))
    env = {"MOCK_UPSTREAM_KEY": UPSTREAM_KEY}
    servers: list[procs.Server] = []
    try:
        port = procs.free_port()
        mock_argv = [sys.executable, "-m", "load_tests.mock_upstream", "--port", str(port), "--api-key", UPSTREAM_KEY]
        mock = procs.start("mock", mock_argv, 1, f"http://127.0.0.1:{port}", work)
        servers.append(mock)
        procs.wait_ready(mock, "/health")
        _set_chunk_delay(mock.url, args.chunk_delay_ms)
        redis = None
        text = GATEWAY_YAML.format(mock=mock.url)
        if args.limits != "off":
            (work / "policies").mkdir()
            (work / "policies" / "limits.yaml").write_text(LIMIT_POLICIES)
            text = text.replace(
                "api_key: env:MOCK_UPSTREAM_KEY}", "api_key: env:MOCK_UPSTREAM_KEY, price: {input: 1, output: 2}}"
            )
            text += f"policies: {{dir: {work / 'policies'}}}\n"
        if args.limits == "redis":
            redis = procs.start_redis(1, work)
            servers.append(redis)
            text += f"limits: {{redis_url: '{redis.url}'}}\n"
        config = work / "gateway.yaml"
        config.write_text(text)
        key = _key(config, env)
        port = procs.free_port()
        gateway_argv = [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port", str(port)]
        gateway = procs.start("gateway", gateway_argv, 0, f"http://127.0.0.1:{port}", work, env)
        servers.append(gateway)
        procs.wait_ready(gateway, "/healthz")
        rows = asyncio.run(soak(args, gateway, mock, key, redis))
        with urllib.request.urlopen(mock.url + "/_mock/stats", timeout=5) as response:
            stats = json.loads(response.read())
        _report(args, rows, stats)
    finally:
        for server in reversed(servers):
            procs.stop(server)


def _set_chunk_delay(mock_url: str, delay_ms: float) -> None:
    body = f'{{"slow-model": {{"chunk_delay_ms": {delay_ms}}}}}'.encode()
    request = urllib.request.Request(mock_url + "/_mock/faults", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=5):
        pass


def _key(config: Path, env: dict[str, str]) -> str:
    argv = [sys.executable, "-m", "gateway", "keys", "create", "--config", str(config), "--team", "soak"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env={**os.environ, **env}, check=True)
    return done.stdout.strip()


def _report(args: argparse.Namespace, rows: list[str], stats: object) -> None:
    lines = [
        f"# Gateway soak — {datetime.now():%Y-%m-%dT%H:%M}",
        "",
        f"- {args.duration:g} s of steady traffic, {args.concurrency} concurrent clients, mix per client: "
        f"{', '.join(MIX)}; abandoned streams come from a model whose chunks are {args.chunk_delay_ms:g} ms apart",
        "- gateway on core 0, mock upstream and clients on core 1 (loopback only)",
        f"- limits: {args.limits}"
        + (" (RPM, TPM, concurrency per key and a team budget on every request)" if args.limits != "off" else ""),
        "",
        "| seconds | responses | gateway RSS MB | open fds | connections to upstream |"
        + (" redis RSS MB |" if args.limits == "redis" else ""),
        "|---|---|---|---|---|" + ("---|" if args.limits == "redis" else ""),
        *rows,
        "",
        f"Mock upstream stream counters at the end: {stats}",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"report written to {args.out}")


if __name__ == "__main__":
    main()
