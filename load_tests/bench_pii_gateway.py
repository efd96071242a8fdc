"""Section 2 of the PII benchmark (`python -m load_tests.bench_pii`): the gateway over loopback HTTP. It starts
the mock upstream and, one variant at a time (PII off, on with NER, on with patterns only), a pinned gateway
process, checks what one PII request leaks to the upstream and gets back, then measures latency at
concurrency 1 and throughput at concurrency 16 with an aiohttp client; `bench_gateway` returns a `GatewayRun`.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import string
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson

from load_tests import bench_procs as procs
from load_tests.bench import gateway_key
from load_tests.bench_cpu import CpuWindow
from load_tests.bench_pii_common import (
    ACTIONS,
    ALL_ENTITIES,
    CHAT_PATH,
    CITY,
    CONCURRENCY,
    EMAIL,
    ENTITY_OF,
    IBAN,
    LOAD_CORE,
    MIX,
    NAME,
    PHONE,
    PROMPTS,
    REPO,
    SERVER_CORE,
    UPSTREAM_KEY,
    Ctx,
    Variant,
    group_cpu,
    least_disturbed,
    percentile,
    self_cpu,
)


@dataclass
class Sample:
    gateway: str
    kind: str
    concurrency: int
    requests: int = 0
    errors: Counter = field(default_factory=Counter)
    p50: float = float("nan")
    p99: float = float("nan")
    rps: float = float("nan")
    server_cpu: float = float("nan")
    client_cpu: float = float("nan")
    foreign_cpu: float = float("nan")


@dataclass
class GatewayRun:
    variant: Variant
    server: procs.Server
    key: str
    pool_pids: list[int]
    main_idle_kb: int
    samples: list[Sample] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)


def body(kind: str, unique: bool = False) -> bytes:
    """A request with the prompt of `kind`; `unique`: its last word replaced by random lowercase letters (no
    PII candidate, the same length), so no two requests send the same text and the analyses cache never
    answers: the cost of a text the gateway has not seen."""
    text = PROMPTS[kind][1]
    if unique:
        tag = "".join(random.choices(string.ascii_lowercase, k=12))
        text = text[: -len(tag) - 1] + " " + tag
    return orjson.dumps({"model": "mock-model", "messages": [{"role": "user", "content": text}], "max_tokens": 16})


class Bodies:
    """The request bodies of a run, in turn: `kinds` round robin, each unique unless --repeat-prompts."""

    def __init__(self, kinds: list[str], unique: bool) -> None:
        self.kinds, self.unique = kinds, unique
        self.fixed = [body(kind) for kind in kinds]
        self.turn = itertools.count()

    def next(self) -> bytes:
        at = next(self.turn) % len(self.kinds)
        return body(self.kinds[at], True) if self.unique else self.fixed[at]


async def post(session: aiohttp.ClientSession, url: str, data: bytes, sample: Sample, times: list[float]) -> None:
    start = time.perf_counter()
    try:
        async with session.post(url, data=data) as response:
            await response.read()
            status = response.status
    except (TimeoutError, aiohttp.ClientError) as exc:
        sample.errors[type(exc).__name__] += 1
        return
    if status == 200:
        times.append((time.perf_counter() - start) * 1000)
    else:
        sample.errors[str(status)] += 1


async def load(url: str, headers: dict, sample: Sample, bodies: Bodies, count: int, warm: Any, pids: list[int]) -> None:
    """`count` requests (concurrency 1) or `count` seconds (concurrency > 1) of `kinds` in turn, after `warm`
    (requests, or seconds at full concurrency) unrecorded; fills `sample`."""
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, headers=headers, timeout=aiohttp.ClientTimeout(total=30)
    ) as session:
        scratch: list[float] = []
        spare = Sample("", "", 0)
        if sample.concurrency == 1:
            for _ in range(warm):
                await post(session, url, bodies.next(), spare, scratch)
        else:
            await timed(session, url, bodies, sample.concurrency, warm, spare, scratch)
        window, cpu0, client0, t0 = CpuWindow(pids), group_cpu(pids[1:]), self_cpu(), time.perf_counter()
        times: list[float] = []
        if sample.concurrency == 1:
            for _ in range(count):
                await post(session, url, bodies.next(), sample, times)
        else:
            await timed(session, url, bodies, sample.concurrency, count, sample, times)
        elapsed = time.perf_counter() - t0
    sample.foreign_cpu = window.foreign_percent()
    sample.server_cpu = (group_cpu(pids[1:]) - cpu0) / elapsed * 100
    sample.client_cpu = (self_cpu() - client0) / elapsed * 100
    sample.requests = len(times) + sum(sample.errors.values())
    sample.p50, sample.p99 = percentile(times, 0.5), percentile(times, 0.99)
    sample.rps = len(times) / elapsed


async def timed(session: Any, url: str, bodies: Bodies, concurrency: int, seconds: float,
                sample: Sample, times: list[float]) -> None:  # fmt: skip
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            await post(session, url, bodies.next(), sample, times)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def measure(ctx: Ctx, run: GatewayRun, mock: procs.Server, kind: str, kinds: list[str], concurrency: int) -> Sample:
    """One row, re-run (at most --retries times) while other processes disturbed it; the least disturbed."""
    pids = [mock.pid, run.server.pid, *run.pool_pids]
    headers = {"authorization": f"Bearer {run.key}", "content-type": "application/json"}
    if concurrency == 1:
        count, warm = ctx.args.requests, min(50, max(10, ctx.args.requests // 10))
    else:
        count, warm = ctx.args.duration, ctx.args.warmup

    def once() -> Sample:
        sample = Sample(run.variant.label, kind, concurrency)
        bodies = Bodies(kinds, not ctx.args.repeat_prompts)
        asyncio.run(load(run.server.url + CHAT_PATH, headers, sample, bodies, count, warm, pids))
        return sample

    best: Sample = least_disturbed(ctx, pids, once)
    errors = f"  errors {dict(best.errors)}" if best.errors else ""
    print(
        f"  {run.variant.label:22} {kind:22} c={concurrency:<3} p50 {best.p50:7.2f} ms  p99 {best.p99:7.2f} ms"
        f"  {best.rps:7.1f} req/s  gateway CPU {best.server_cpu:3.0f}%  client CPU {best.client_cpu:3.0f}%"
        f"  other CPU {best.foreign_cpu:3.0f}%{errors}",
        flush=True,
    )
    return best


def policy_yaml(variant: Variant) -> str:
    text = "policies:\n  - name: bench\n    rules:\n      - {name: any-model, kind: models, allow: ['*']}\n"
    if variant.pii_rule:
        entities = "".join(f"          {entity}: {ACTIONS[entity]}\n" for entity in ALL_ENTITIES)
        text += f"      - name: personal-data\n        kind: pii\n        entities:\n{entities}"
    return text


def gateway_yaml(ctx: Ctx, variant: Variant, port: int, mock: procs.Server) -> str:
    model = "null" if variant.spacy_model is None else variant.spacy_model
    return (
        f"listen: {{host: 127.0.0.1, port: {port}}}\n"
        f"models:\n  - name: mock-model\n    provider: openai_compatible\n    base_url: {mock.url}/v1\n"
        "    api_key: env:MOCK_UPSTREAM_KEY\n"
        "policies: {dir: policies}\n"
        "audit: false\n"
        f"pii: {{processes: {ctx.args.processes}, timeout: {ctx.args.pii_timeout:g}, spacy_model: {model}}}\n"
    )


def readyz(url: str) -> dict:
    try:
        return httpx.get(url + "/readyz", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return {}


def start_gateway(ctx: Ctx, variant: Variant, mock: procs.Server) -> GatewayRun:
    folder = ctx.work / variant.key
    (folder / "policies").mkdir(parents=True)
    (folder / "policies" / "bench.yaml").write_text(policy_yaml(variant))
    port = procs.free_port()
    config = folder / "gateway.yaml"
    config.write_text(gateway_yaml(ctx, variant, port, mock))
    key = gateway_key(config, folder)
    argv = [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--host", "127.0.0.1"]
    env = {"PYTHONPATH": str(REPO), "MOCK_UPSTREAM_KEY": UPSTREAM_KEY}
    server = procs.start(f"gateway-{variant.key}", [*argv, "--port", str(port)], SERVER_CORE,
                         f"http://127.0.0.1:{port}", ctx.work, env=env)  # fmt: skip
    ctx.servers.append(server)
    procs.wait_ready(server, "/healthz", timeout=120)
    if variant.pii_rule:
        deadline = time.monotonic() + 300
        while not (readyz(server.url).get("pii") or {}).get("ready"):  # each pool process loads Presidio once
            if server.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{server.name}: the PII pool did not get ready:\n{server.log_tail()}")
            time.sleep(0.2)
    pool = procs.descendants(server.pid)
    for pid in pool:  # spawned with the gateway's affinity (core 0): move them to --pool-cores
        try:
            os.sched_setaffinity(pid, ctx.args.pool_cores)
        except OSError:
            pass
    server.note_rss("idle")
    run = GatewayRun(variant, server, key, pool, main_rss_kb(server.pid))
    print(f"{server.name} pid {server.pid} at {server.url} (core {SERVER_CORE}; children {pool})", flush=True)
    return run


def main_rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def verify(run: GatewayRun, mock: procs.Server) -> None:
    """One pattern-PII and one NER-PII request: what the upstream received, what the client got back."""
    headers = {"authorization": f"Bearer {run.key}"}
    with httpx.Client(timeout=30) as client:
        for kind, values in (("pattern", (EMAIL, PHONE, IBAN)), ("ner", (NAME, CITY))):
            client.delete(mock.url + "/_mock/requests")
            response = client.post(run.server.url + CHAT_PATH, content=body(kind), headers=headers)
            if response.status_code != 200:
                run.checks.append(f"{PROMPTS[kind][0]}: status {response.status_code} ⚠ {response.text[:200]}")
                continue
            sent = orjson.dumps(client.get(mock.url + "/_mock/requests").json()).decode()
            leaked = [v for v in values if v in sent]
            answer = response.json()["choices"][0]["message"]["content"]
            back = [v for v in values if v in answer]
            run.checks.append(
                f"{PROMPTS[kind][0]}: {len(leaked)} of {len(values)} values reached the upstream"
                f"{' (' + ', '.join(leaked) + ')' if leaked else ''}; {len(back)} of {len(values)} are in the "
                f"client's answer (the mock echoes the first 16 words{actions(values) if run.variant.pii_rule else ''})"
            )


def actions(values: tuple[str, ...]) -> str:
    listed = ", ".join(f"{v}: {ACTIONS[ENTITY_OF[v]]}" for v in values)
    return f"; pseudonymised values are restored, masked ones stay masked: {listed}"


def bench_gateway(ctx: Ctx, variant: Variant, mock: procs.Server) -> GatewayRun:
    run = start_gateway(ctx, variant, mock)
    try:
        verify(run, mock)
        for kind in PROMPTS:
            run.samples.append(measure(ctx, run, mock, kind, [kind], 1))
        run.samples.append(measure(ctx, run, mock, "mix", MIX, CONCURRENCY))
        run.server.note_rss("after load")
    finally:
        procs.stop(run.server)
    return run


def start_mock(ctx: Ctx) -> procs.Server:
    port = procs.free_port()
    argv = [sys.executable, "-m", "load_tests.mock_upstream", "--host", "127.0.0.1", "--port", str(port)]
    mock = procs.start("mock", [*argv, "--api-key", UPSTREAM_KEY], LOAD_CORE, f"http://127.0.0.1:{port}", ctx.work,
                       env={"PYTHONPATH": str(REPO)})  # fmt: skip
    ctx.servers.append(mock)
    procs.wait_ready(mock, "/health")
    print(f"mock upstream pid {mock.pid} at {mock.url} (core {LOAD_CORE})", flush=True)
    return mock
