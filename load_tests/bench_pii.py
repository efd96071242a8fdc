"""PII protection's cost: the pre-filter and Presidio in-process, threads vs processes, and the gateway with
PII protection on vs off over HTTP.

    python -m load_tests.bench_pii [--duration 10] [--requests 400] [--out load_tests/reports/bench-pii-<date>.md]
                                   [--gateways off,ner,patterns] [--no-analyzer] [--pool-cores 0,1]

1. Analyzer, in this process (no HTTP), on four 1 KB prompts (lowercase without PII, English without PII,
   pattern PII: e-mail, phone, IBAN, NER PII: a person's name and a city): the pre-filter's time
   (`might_contain`) and whether it skips Presidio, and Presidio's analyze time p50/p99 with the pattern-only
   engine (no spaCy model) and with NER (the default spaCy model). Then analyses/s of the pattern-PII prompt
   with 1 and 2 threads (sharing the GIL) and 1 and 2 spawned processes, for both engines. Each measurement
   is bounded by --analyzer-seconds (default: min(5, --duration)).
2. Gateway, over loopback HTTP: the mock upstream, then one gateway at a time, its main process pinned to
   core 0: `off` (a policy without a pii rule, so the policy stages run in both), `ner` (a pii rule, default
   spaCy model) and `patterns` (the same rule, `pii: {spacy_model: null}`). The PII pool's processes inherit
   core 0 from the gateway; once it is ready they are moved to --pool-cores (default 0,1: not pinned). An
   aiohttp client on core 1 (shared with the mock) measures added latency at concurrency 1 (--requests per
   prompt kind) and throughput at concurrency 16 for --duration seconds with 20 % PII prompts.

Every process started here is stopped by PID (SIGTERM, then SIGKILL) in a `finally`; everything listens on
127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import datetime
import itertools
import multiprocessing
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson

from gateway.pii import engine as pii_engine
from gateway.settings import PiiSettings
from load_tests import bench_procs as procs
from load_tests.bench import gateway_key
from load_tests.bench_cpu import CpuWindow, process_cpu
from load_tests.bench_report import NOISY_CPU, cpu_cell, machine, table

REPO = Path(__file__).resolve().parent.parent
SERVER_CORE, LOAD_CORE = 0, 1
UPSTREAM_KEY = "sk-mock"
CHAT_PATH = "/v1/chat/completions"
NER_MODEL = PiiSettings().spacy_model
THRESHOLD = 0.35  # a pii rule's default score_threshold
PROMPT_CHARS = 1024
CONCURRENCY = 16
QUIET_CPU = 10.0

PATTERN_ENTITIES = ("EMAIL_ADDRESS", "PHONE_NUMBER", "IBAN_CODE", "CREDIT_CARD", "US_SSN", "IP_ADDRESS")
ALL_ENTITIES = (*PATTERN_ENTITIES, "PERSON", "LOCATION")
ACTIONS = {
    "EMAIL_ADDRESS": "pseudonymise",
    "PHONE_NUMBER": "pseudonymise",
    "IBAN_CODE": "pseudonymise",
    "CREDIT_CARD": "mask",
    "US_SSN": "mask",
    "IP_ADDRESS": "mask",
    "PERSON": "pseudonymise",
    "LOCATION": "mask",
}

EMAIL, PHONE, IBAN = "billing.team@example.com", "+1 415-555-0132", "DE89370400440532013000"
NAME, CITY = "Alice Martin", "Paris"  # en_core_web_sm misses some cities (Lyon); Paris it tags
ENTITY_OF = {EMAIL: "EMAIL_ADDRESS", PHONE: "PHONE_NUMBER", IBAN: "IBAN_CODE", NAME: "PERSON", CITY: "LOCATION"}
FILLER = (
    "The quarterly planning review covers the roadmap for the next two releases. "
    "Our team wants a short summary of the open risks, the dependencies between the services, and the work "
    "that can move to the following quarter. "
    "Please keep the tone neutral and avoid jargon, since the summary goes to a wide audience. "
    "We also need a list of questions to ask during the review, ordered by importance. "
    "Finally, suggest how we could measure progress without adding more meetings to the calendar. "
)


def prompt(lead: str) -> str:
    """`lead`, then English filler, cut to PROMPT_CHARS characters (ASCII: 1 KB)."""
    text = lead
    while len(text) < PROMPT_CHARS:
        text += FILLER
    return text[:PROMPT_CHARS]


# kind → (label, text); the PII sits in the first 16 words, so the mock's cut echo carries it back.
PROMPTS: dict[str, tuple[str, str]] = {
    "lower": ("1 KB lowercase, no PII", prompt("").lower()),
    "english": ("1 KB English, no PII", prompt("")),
    "pattern": (
        "1 KB with pattern PII",
        prompt(f"Please send the invoice to {EMAIL} or call {PHONE}; pay to {IBAN}. "),
    ),
    "ner": ("1 KB with NER PII", prompt(f"My colleague {NAME} will present the plan at our office in {CITY}. ")),
}
# The throughput mix: 20 % PII (half pattern, half NER), the rest English without PII.
MIX = ["pattern", "english", "english", "english", "english", "ner", "english", "english", "english", "english"]


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    pii_rule: bool
    spacy_model: str | None = NER_MODEL


VARIANTS = {
    "off": Variant("off", "PII off", pii_rule=False),
    "ner": Variant("ner", "PII on, NER", pii_rule=True),
    "patterns": Variant("patterns", "PII on, patterns only", pii_rule=True, spacy_model=None),
}


@dataclass
class Ctx:
    args: argparse.Namespace
    work: Path
    servers: list[procs.Server] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    today = datetime.date.today().isoformat()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per throughput run")
    parser.add_argument("--requests", type=int, default=400, help="requests per prompt kind at concurrency 1")
    parser.add_argument("--warmup", type=float, default=1, help="seconds of unrecorded load before a throughput run")
    parser.add_argument("--analyzer-seconds", type=float, help="bound per in-process measurement (min(5, duration))")
    parser.add_argument("--gateways", default="off,ner,patterns", help="gateway variants to run: off, ner, patterns")
    parser.add_argument("--no-analyzer", action="store_true", help="skip the in-process analyzer section")
    parser.add_argument("--processes", type=int, default=len(os.sched_getaffinity(0)), help="pii.processes")
    parser.add_argument("--pii-timeout", type=float, default=PiiSettings().timeout, help="pii.timeout (s)")
    parser.add_argument("--pool-cores", default="0,1", help="cores the gateway's PII pool is moved to when ready")
    parser.add_argument("--quiet-timeout", type=float, default=30, help="max wait for other processes to go quiet")
    parser.add_argument("--retries", type=int, default=1, help="re-runs of a measurement disturbed by others")
    parser.add_argument("--out", type=Path, default=REPO / "load_tests" / "reports" / f"bench-pii-{today}.md")
    args = parser.parse_args(argv)
    args.gateways = [g for g in args.gateways.split(",") if g]
    unknown = [g for g in args.gateways if g not in VARIANTS]
    if unknown:
        parser.error(f"unknown gateway variant(s): {', '.join(unknown)}")
    if args.analyzer_seconds is None:
        args.analyzer_seconds = min(5.0, args.duration)
    args.pool_cores = {int(c) for c in args.pool_cores.split(",") if c}
    return args


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (NaN if empty)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def num(value: float, digits: int = 2) -> str:
    return "-" if value != value else f"{value:.{digits}f}"


def delta(value: float, base: float) -> str:
    return "-" if value != value or base != base else f"{value - base:+.2f}"


def ratio(a: float, b: float) -> float:
    return a / b if b and b == b and a == a else float("nan")


# ================================================================ 1. the analyzer, in this process


@dataclass
class Timing:
    p50: float = float("nan")
    p99: float = float("nan")
    count: int = 0
    found: list[str] = field(default_factory=list)


@dataclass
class PromptRow:
    kind: str
    chars: int
    prefilter_patterns_us: float
    prefilter_all_us: float
    skip_patterns: bool
    skip_all: bool
    patterns: Timing
    ner: Timing
    foreign_cpu: float = float("nan")


@dataclass
class PoolRow:
    engine: str
    executor: str
    workers: int
    per_second: float
    cpu: float
    foreign_cpu: float


@dataclass
class AnalyzerResults:
    prompts: list[PromptRow] = field(default_factory=list)
    pools: list[PoolRow] = field(default_factory=list)


def prefilter_us(text: str, entities: frozenset[str]) -> float:
    """Median µs per `might_contain` call over 5 runs of 2000 calls."""
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(2000):
            pii_engine.might_contain(text, entities)
        runs.append((time.perf_counter() - start) / 2000 * 1e6)
    return statistics.median(runs)


def analyze_timing(analyzer: Any, text: str, entities: tuple[str, ...], seconds: float, limit: int) -> Timing:
    """Presidio on `text` in this process, as a pool process runs it (`_analyze`): p50/p99 ms."""
    pii_engine._state["analyzer"] = analyzer
    found = pii_engine._analyze([text], list(entities), THRESHOLD)[0]
    for _ in range(2):
        pii_engine._analyze([text], list(entities), THRESHOLD)
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < limit and time.perf_counter() < deadline:
        start = time.perf_counter()
        pii_engine._analyze([text], list(entities), THRESHOLD)
        times.append((time.perf_counter() - start) * 1000)
    return Timing(percentile(times, 0.5), percentile(times, 0.99), len(times), sorted({e for *_, e in found}))


def worker_pid(pause: float) -> int:
    """Run in a pool process: its PID, after a pause (so that every worker gets one of a batch)."""
    time.sleep(pause)
    return os.getpid()


def wait_workers(pool: concurrent.futures.ProcessPoolExecutor, workers: int, timeout: float = 180) -> set[int]:
    """PIDs of the pool's workers, once every one has run its initializer (loaded Presidio)."""
    pids: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(pids) < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(pids)} of {workers} pool processes started in {timeout:g} s")
        batch = [pool.submit(worker_pid, 0.05) for _ in range(workers * 2)]
        pids |= {future.result(timeout=timeout) for future in batch}
    return pids


def rate(executor: concurrent.futures.Executor, text: str, entities: list[str], workers: int, seconds: float) -> float:
    """Analyses/s of `text`, keeping 2 per worker in flight until `seconds` have passed."""
    start = time.perf_counter()
    deadline = start + seconds
    pending = {executor.submit(pii_engine._analyze, [text], entities, THRESHOLD) for _ in range(2 * workers)}
    done_count = 0
    while pending:
        done, pending = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
        for future in done:
            future.result()
            done_count += 1
        if time.perf_counter() < deadline:
            pending |= {executor.submit(pii_engine._analyze, [text], entities, THRESHOLD) for _ in done}
    return done_count / (time.perf_counter() - start)


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def least_disturbed(ctx: Ctx, pids: list[int], once: Callable[[], Any]) -> Any:
    """`once()` (a result with `foreign_cpu`) after waiting for quiet, re-run at most --retries times while
    other processes disturbed it; the least disturbed result."""
    tries = []
    for _ in range(1 + max(0, ctx.args.retries)):
        wait_quiet(ctx, pids)
        tries.append(once())
        if tries[-1].foreign_cpu <= NOISY_CPU:
            break
    return min(tries, key=lambda r: r.foreign_cpu)


def pool_rate(
    ctx: Ctx, row: PoolRow, pool: concurrent.futures.Executor, pids: list[int], cpu: Callable[[], float], job: tuple
) -> PoolRow:
    """Fill `row` with the analyses/s of `pool`, its CPU (`cpu()`: seconds used so far) and others' CPU."""

    def once() -> PoolRow:
        window, cpu0, t0 = CpuWindow(pids), cpu(), time.perf_counter()
        per_second = rate(pool, *job)
        used = (cpu() - cpu0) / (time.perf_counter() - t0) * 100
        return PoolRow(row.engine, row.executor, row.workers, per_second, used, window.foreign_percent())

    return least_disturbed(ctx, pids, once)


def thread_row(
    ctx: Ctx, engine: str, analyzer: Any, workers: int, text: str, entities: list[str], seconds: float
) -> PoolRow:
    pii_engine._state["analyzer"] = analyzer
    row = PoolRow(engine, "threads", workers, float("nan"), float("nan"), float("nan"))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return pool_rate(ctx, row, pool, [], self_cpu, (text, entities, workers, seconds))


def process_row(
    ctx: Ctx, engine: str, model: str | None, workers: int, text: str, entities: list[str], seconds: float
) -> PoolRow:
    pool = concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=pii_engine._init, initargs=(model,)
    )
    started = dict(pool._processes or {})
    try:
        pids = sorted(wait_workers(pool, workers))
        started = dict(pool._processes or {})
        pool.submit(pii_engine._analyze, [text], entities, THRESHOLD).result(timeout=60)
        row = PoolRow(engine, "processes", workers, float("nan"), float("nan"), float("nan"))
        return pool_rate(ctx, row, pool, pids, lambda: group_cpu(pids), (text, entities, workers, seconds))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for process in started.values():  # stopped by PID if shutting down did not end it
            if process.is_alive():
                process.terminate()
                process.join(5)


def bench_analyzer(ctx: Ctx) -> AnalyzerResults:
    seconds, limit = ctx.args.analyzer_seconds, max(ctx.args.requests, 10)
    pii_engine._offline_tldextract()
    engines = {"patterns": pii_engine.build_analyzer(None)}
    if pii_engine.model_available(NER_MODEL):
        engines["NER"] = pii_engine.build_analyzer(NER_MODEL)
    else:
        ctx.notes.append(f"the spaCy model {NER_MODEL!r} is not installed: NER not measured in-process")
    results = AnalyzerResults()
    pattern_set, all_set = frozenset(PATTERN_ENTITIES), frozenset(ALL_ENTITIES)
    for kind, (label, text) in PROMPTS.items():

        def once(kind: str = kind, text: str = text) -> PromptRow:
            window = CpuWindow([])
            row = PromptRow(
                kind=kind,
                chars=len(text.encode()),
                prefilter_patterns_us=prefilter_us(text, pattern_set),
                prefilter_all_us=prefilter_us(text, all_set),
                skip_patterns=not pii_engine.might_contain(text, pattern_set),
                skip_all=not pii_engine.might_contain(text, all_set),
                patterns=analyze_timing(engines["patterns"], text, PATTERN_ENTITIES, seconds, limit),
                ner=analyze_timing(engines["NER"], text, ALL_ENTITIES, seconds, limit)
                if "NER" in engines
                else Timing(),
            )
            row.foreign_cpu = window.foreign_percent()
            return row

        row = least_disturbed(ctx, [], once)
        print(
            f"  {label:24} pre-filter {row.prefilter_patterns_us:6.1f}/{row.prefilter_all_us:6.1f} µs"
            f"  skip {row.skip_patterns!s:5}/{row.skip_all!s:5}  patterns p50 {row.patterns.p50:6.2f} ms"
            f"  NER p50 {row.ner.p50:6.2f} ms  found {row.ner.found}  other CPU {row.foreign_cpu:3.0f}%",
            flush=True,
        )
        results.prompts.append(row)
    text = PROMPTS["pattern"][1]
    for name, analyzer in engines.items():
        model = None if name == "patterns" else NER_MODEL
        entities = list(PATTERN_ENTITIES if model is None else ALL_ENTITIES)
        for executor in ("threads", "processes"):
            for workers in (1, 2):
                if executor == "threads":
                    pooled = thread_row(ctx, name, analyzer, workers, text, entities, seconds)
                else:
                    pooled = process_row(ctx, name, model, workers, text, entities, seconds)
                print(
                    f"  {name:8} {pooled.executor:9} x{workers}: {pooled.per_second:7.1f} analyses/s"
                    f"  CPU {pooled.cpu:4.0f}%  other CPU {pooled.foreign_cpu:3.0f}%",
                    flush=True,
                )
                results.pools.append(pooled)
    pii_engine._state.clear()
    return results


# ================================================================ 2. the gateway, over HTTP


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


def body(kind: str) -> bytes:
    text = PROMPTS[kind][1]
    return orjson.dumps({"model": "mock-model", "messages": [{"role": "user", "content": text}], "max_tokens": 16})


def group_cpu(pids: list[int]) -> float:
    return sum(process_cpu(pid) for pid in pids)


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


async def load(
    url: str, headers: dict, sample: Sample, kinds: list[str], count: int, warm: Any, pids: list[int]
) -> None:
    """`count` requests (concurrency 1) or `count` seconds (concurrency > 1) of `kinds` in turn, after `warm`
    (requests, or seconds at full concurrency) unrecorded; fills `sample`."""
    bodies = [body(kind) for kind in kinds]
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, headers=headers, timeout=aiohttp.ClientTimeout(total=30)
    ) as session:
        scratch: list[float] = []
        spare = Sample("", "", 0)
        turn = itertools.count()
        if sample.concurrency == 1:
            for _ in range(warm):
                await post(session, url, bodies[next(turn) % len(bodies)], spare, scratch)
        else:
            await timed(session, url, bodies, turn, sample.concurrency, warm, spare, scratch)
        window, cpu0, client0, t0 = CpuWindow(pids), group_cpu(pids[1:]), self_cpu(), time.perf_counter()
        times: list[float] = []
        if sample.concurrency == 1:
            for _ in range(count):
                await post(session, url, bodies[next(turn) % len(bodies)], sample, times)
        else:
            await timed(session, url, bodies, turn, sample.concurrency, count, sample, times)
        elapsed = time.perf_counter() - t0
    sample.foreign_cpu = window.foreign_percent()
    sample.server_cpu = (group_cpu(pids[1:]) - cpu0) / elapsed * 100
    sample.client_cpu = (self_cpu() - client0) / elapsed * 100
    sample.requests = len(times) + sum(sample.errors.values())
    sample.p50, sample.p99 = percentile(times, 0.5), percentile(times, 0.99)
    sample.rps = len(times) / elapsed


async def timed(session: Any, url: str, bodies: list[bytes], turn: Any, concurrency: int, seconds: float,
                sample: Sample, times: list[float]) -> None:  # fmt: skip
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            await post(session, url, bodies[next(turn) % len(bodies)], sample, times)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def wait_quiet(ctx: Ctx, pids: list[int]) -> None:
    """Wait (at most --quiet-timeout s) until processes outside the benchmark leave the CPU alone."""
    deadline = time.monotonic() + ctx.args.quiet_timeout
    while time.monotonic() < deadline:
        window = CpuWindow(pids)
        time.sleep(0.5)
        if window.foreign_percent() < QUIET_CPU:
            return


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
        asyncio.run(load(run.server.url + CHAT_PATH, headers, sample, kinds, count, warm, pids))
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


# ================================================================ 3. the report


def analyzer_tables(results: AnalyzerResults | None) -> list[str]:
    if results is None:
        return ["(not measured: --no-analyzer)"]
    rows = [
        [PROMPTS[r.kind][0], r.chars, num(r.prefilter_patterns_us, 1), "yes" if r.skip_patterns else "no",
         num(r.prefilter_all_us, 1), "yes" if r.skip_all else "no", num(r.patterns.p50), num(r.patterns.p99),
         num(r.ner.p50), num(r.ner.p99), ", ".join(r.patterns.found) or "none", ", ".join(r.ner.found) or "none",
         cpu_cell(r.foreign_cpu)]
        for r in results.prompts
    ]  # fmt: skip
    header = ["prompt", "bytes", "pre-filter µs (patterns)", "skips Presidio (patterns)",
              "pre-filter µs (+PERSON, LOCATION)", "skips Presidio (+PERSON, LOCATION)", "patterns p50 ms",
              "patterns p99 ms", "NER p50 ms", "NER p99 ms", "found (patterns engine)", "found (NER engine)",
              "other CPU %"]  # fmt: skip
    samples = min((t.count for r in results.prompts for t in (r.patterns, r.ner) if t.count), default=0)
    lines = [*table(header, rows), ""]
    lines.append(
        f"Presidio in this process, as a pool process runs it (`_analyze`); at least {samples} analyses per cell "
        f"(bounded by time). Entity sets: *patterns* = {', '.join(PATTERN_ENTITIES)}; the NER engine gets those "
        f"plus PERSON, LOCATION. Pre-filter: `might_contain`, median of 5 x 2000 calls."
    )
    lines += ["", f"**What this shows:** {prefilter_finding(results)}"]
    pool_rows = [
        [p.engine, p.executor, p.workers, f"{p.per_second:,.1f}", num(ratio(p.per_second, single(results, p)), 2),
         f"{p.cpu:.0f}", cpu_cell(p.foreign_cpu)]
        for p in results.pools
    ]  # fmt: skip
    lines += ["", "### Threads vs processes: analyses/s of the pattern-PII prompt", ""]
    header = ["engine", "executor", "workers", "analyses/s", "vs 1 worker", "CPU % (of one core)", "other CPU %"]
    lines += table(header, pool_rows)
    lines += ["", f"**What this shows:** {pool_finding(results)}"]
    return lines


def single(results: AnalyzerResults, row: PoolRow) -> float:
    return next(
        (p.per_second for p in results.pools if (p.engine, p.executor, p.workers) == (row.engine, row.executor, 1)),
        float("nan"),
    )


def prefilter_finding(results: AnalyzerResults) -> str:
    rows = {r.kind: r for r in results.prompts}
    costs = [c for r in results.prompts for c in (r.prefilter_patterns_us, r.prefilter_all_us)]
    cheapest = min((r.patterns.p50 for r in results.prompts if r.patterns.p50 == r.patterns.p50), default=float("nan"))
    parts = [
        f"the pre-filter costs {min(costs):.1f}-{max(costs):.1f} µs per 1 KB prompt (the most when it must scan "
        f"the whole text), at worst {ratio(cheapest * 1000, max(costs)):.0f}x less than the cheapest pattern-only "
        f"analysis ({cheapest:.2f} ms)."
    ]
    skip_p = [PROMPTS[k][0] for k, r in rows.items() if r.skip_patterns]
    skip_a = [PROMPTS[k][0] for k, r in rows.items() if r.skip_all]
    parts.append(
        f"With pattern entities only, Presidio is skipped for: {', '.join(skip_p) or 'none'}; with PERSON and "
        f"LOCATION configured, only for: {', '.join(skip_a) or 'none'} (any capital letter may start a name)."
    )
    english = rows.get("english")
    if english and english.ner.p50 == english.ner.p50:
        parts.append(
            f"NER costs {ratio(english.ner.p50, english.patterns.p50):.1f}x the pattern-only analysis on English "
            f"without PII ({english.ner.p50:.2f} vs {english.patterns.p50:.2f} ms p50), and that prompt cannot be "
            f"skipped once PERSON/LOCATION are configured."
        )
    return " ".join(parts)


def pool_finding(results: AnalyzerResults) -> str:
    parts = []
    for engine in dict.fromkeys(p.engine for p in results.pools):
        by = {(p.executor, p.workers): p for p in results.pools if p.engine == engine}
        threads, procs2 = by.get(("threads", 2)), by.get(("processes", 2))
        if threads and procs2:
            by_threads = ratio(threads.per_second, single(results, threads))
            by_processes = ratio(procs2.per_second, single(results, procs2))
            verdict = (
                "threads gain nothing (the GIL)" if by_threads < 1.15 else f"threads gain {by_threads - 1:.0%}"
            ) + (f", processes {by_processes - 1:.0%}" if by_processes == by_processes else "")
            parts.append(
                f"{engine}: 2 threads do {by_threads:.2f}x the analyses/s of 1 thread at {threads.cpu:.0f} % CPU, "
                f"2 processes do {by_processes:.2f}x of 1 process at {procs2.cpu:.0f} % CPU: {verdict}."
            )
    return " ".join(parts) or "(no pool measured)"


def errors_text(sample: Sample) -> str:
    if not sample.errors:
        return "0"
    return f"**{sum(sample.errors.values())}** ⚠ ({', '.join(f'{k}: {v}' for k, v in sample.errors.items())})"


def latency_table(runs: list[GatewayRun]) -> list[str]:
    off = next((r for r in runs if r.variant.key == "off"), None)
    base = {s.kind: s for s in off.samples} if off else {}
    rows = []
    for kind in PROMPTS:
        for run in runs:
            s = next(s for s in run.samples if s.kind == kind)
            b = base.get(kind) if run is not off else None
            rows.append([PROMPTS[kind][0], run.variant.label, s.requests, errors_text(s), num(s.p50), num(s.p99),
                         delta(s.p50, b.p50) if b else "-", delta(s.p99, b.p99) if b else "-", f"{s.server_cpu:.0f}",
                         cpu_cell(s.foreign_cpu)])  # fmt: skip
    header = ["prompt", "gateway", "requests", "errors", "p50 ms", "p99 ms", "Δp50 vs off", "Δp99 vs off",
              "gateway CPU %", "other CPU %"]  # fmt: skip
    lines = [*table(header, rows), ""]
    findings = []
    for run in runs:
        if run is off or not base:
            continue
        added = {k: next(s for s in run.samples if s.kind == k).p50 - base[k].p50 for k in PROMPTS}
        findings.append(
            f"{run.variant.label} adds (p50) " + ", ".join(f"{v:+.2f} ms to {PROMPTS[k][0]}" for k, v in added.items())
        )
        if run.variant.spacy_model is None and added["english"] > added["lower"] + 1:
            findings.append(
                f"without NER, English without PII still costs {added['english'] - added['lower']:+.2f} ms over "
                f"lowercase: the pre-filter is given the rule's PERSON/LOCATION (capitals are candidates), so the "
                f"text goes to a pattern-only analyzer that cannot find them"
            )
    lines.append("**What this shows:** " + ("; ".join(findings) + "." if findings else "(needs the off gateway)"))
    return lines


def throughput_table(runs: list[GatewayRun]) -> list[str]:
    mixes = {r.variant.key: next(s for s in r.samples if s.kind == "mix") for r in runs}
    off = mixes.get("off")
    rows = [
        [run.variant.label, f"{s.rps:,.1f}", num(ratio(s.rps, off.rps)) if off else "-", num(s.p50), num(s.p99),
         errors_text(s), f"{s.server_cpu:.0f}", f"{s.client_cpu:.0f}", cpu_cell(s.foreign_cpu)]
        for run in runs
        for s in [mixes[run.variant.key]]
    ]  # fmt: skip
    header = ["gateway", "req/s", "ratio to off", "p50 ms", "p99 ms", "errors", "gateway CPU % (with pool)",
              "client CPU %", "other CPU %"]  # fmt: skip
    lines = [*table(header, rows), ""]
    findings = [
        f"{run.variant.label} serves {ratio(mixes[run.variant.key].rps, off.rps):.0%} of the off throughput "
        f"({mixes[run.variant.key].rps:,.0f} vs {off.rps:,.0f} req/s)"
        for run in runs
        if off is not None and run.variant.key != "off"
    ]
    saturated = [run.variant.label for run in runs if mixes[run.variant.key].client_cpu > 80]
    text = "; ".join(findings) + "." if findings else "(needs the off gateway and an on gateway)"
    if saturated:
        text += f" The load client used more than 80 % of its core for: {', '.join(saturated)} (it may cap req/s)."
    lines.append(f"**What this shows:** {text}")
    return lines


def memory_table(runs: list[GatewayRun]) -> list[str]:
    def mb(kb: int | None) -> str:
        return f"{kb / 1024:.1f}" if kb else "-"

    rows = [
        [r.variant.label, r.server.pid, 1 + len(r.pool_pids), mb(r.main_idle_kb), mb(r.server.rss_kb.get("idle")),
         mb(r.server.rss_kb.get("after load"))]
        for r in runs
    ]  # fmt: skip
    header = ["gateway", "pid", "processes (main + children)", "main idle MB", "all idle MB", "all after load MB"]
    lines = [*table(header, rows), ""]
    off = next((r for r in runs if r.variant.key == "off"), None)
    findings = [
        f"{r.variant.label}: +{(r.server.rss_kb.get('idle', 0) - off.server.rss_kb.get('idle', 0)) / 1024:.0f} MB idle "
        f"over off ({len(r.pool_pids)} child processes: the pool and multiprocessing's resource tracker)"
        for r in runs
        if off is not None and r is not off
    ]
    lines.append("**What this shows:** " + ("; ".join(findings) + "." if findings else "(needs the off gateway)"))
    return lines


def render(ctx: Ctx, analyzer: AnalyzerResults | None, runs: list[GatewayRun]) -> str:
    a = ctx.args
    setup = [
        f"- Machine: {machine()}",
        f"- Prompts: {PROMPT_CHARS} ASCII characters each; PII in the first sentence: pattern PII = e-mail, phone, "
        f"IBAN; NER PII = a person's name and a city; lowercase = the English prompt lower-cased",
        f"- Analyzer: Presidio, score threshold {THRESHOLD}; NER model `{NER_MODEL}`; in-process measurements "
        f"bounded by {a.analyzer_seconds:g} s each, this process on all cores",
        f"- Gateway pii rule: {', '.join(f'{e}: {ACTIONS[e]}' for e in ALL_ENTITIES)}; `off` has the same policy "
        f"(a `models` rule allowing `*`) without it",
        f"- Gateway `pii: {{processes: {a.processes}, timeout: {a.pii_timeout:g}}}` (set explicitly: under "
        f"`taskset -c {SERVER_CORE}` the default, one per core of the affinity, would be 1)",
        f"- Pinning: gateway main process on core {SERVER_CORE}; its PII pool moved to cores "
        f"{','.join(map(str, sorted(a.pool_cores)))} once ready (so under load it competes with the mock and the "
        f"client); mock upstream and the aiohttp client on core {LOAD_CORE}",
        f"- Latency: concurrency 1, {a.requests} requests per prompt after a short warm-up; throughput: "
        f"concurrency {CONCURRENCY}, {a.duration:g} s after {a.warmup:g} s warm-up, mix of 20 % PII prompts "
        f"(10 % pattern, 10 % NER) and 80 % English without PII",
        "- Mock upstream echoes the first 16 words (max_tokens 16), so pseudonyms are restored in every answer "
        "that carries one",
    ]
    parts = [f"# PII protection benchmark — {datetime.datetime.now().isoformat(timespec='minutes')}", "", *setup]
    parts += ["", "## Pre-filter and Presidio, in-process (1 KB prompts)", "", *analyzer_tables(analyzer)]
    if runs:
        parts += ["", "## Added latency through the gateway (concurrency 1)", "", *latency_table(runs)]
        parts += [
            "",
            f"## Throughput, 20 % PII mix (concurrency {CONCURRENCY})",
            "",
            *throughput_table(runs),
        ]
        parts += ["", "## Memory (VmRSS)", "", *memory_table(runs)]
        checks = [f"{r.variant.label} — {c}" for r in runs for c in r.checks]
        parts += ["", "## Redaction check (one request each, before the load)", "", *[f"- {c}" for c in checks]]
    else:
        parts += ["", "## Gateway", "", "(not measured)"]
    parts += [
        "",
        f"*other CPU %*: CPU used during the run by processes outside the benchmark, in % of one core; above "
        f"{NOISY_CPU:.0f} % (⚠) the machine was shared and that row is not trustworthy. *gateway CPU %*: the "
        f"gateway's main process plus its PII pool.",
    ]
    if ctx.notes:
        parts += ["", "## Notes", "", *[f"- {n}" for n in ctx.notes]]
    return "\n".join(parts) + "\n"


# ================================================================ main


def execute(ctx: Ctx) -> tuple[AnalyzerResults | None, list[GatewayRun]]:
    analyzer = None
    if not ctx.args.no_analyzer:
        print("analyzer, in-process:", flush=True)
        try:
            analyzer = bench_analyzer(ctx)
        except (RuntimeError, OSError) as exc:  # a pool that did not start (BrokenProcessPool), a timeout
            ctx.notes.append(f"analyzer section failed: {type(exc).__name__}: {exc}")
            print(f"analyzer section failed: {exc}", flush=True)
    runs: list[GatewayRun] = []
    if not ctx.args.gateways:
        return analyzer, runs
    os.sched_setaffinity(0, {LOAD_CORE})
    mock = start_mock(ctx)
    for key in ctx.args.gateways:
        try:
            runs.append(bench_gateway(ctx, VARIANTS[key], mock))
        except (RuntimeError, OSError, subprocess.TimeoutExpired, httpx.HTTPError, ValueError, KeyError) as exc:
            ctx.notes.append(f"gateway {key} failed: {type(exc).__name__}: {exc}")
            print(f"gateway {key} failed: {exc}", flush=True)
    return analyzer, runs


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="gateway-bench-pii-") as work:
        ctx = Ctx(args, Path(work))
        try:
            analyzer, runs = execute(ctx)
        finally:
            for server in ctx.servers:
                procs.stop(server)
    report = render(ctx, analyzer, runs)
    print("\n" + report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(f"report written to {args.out}")


if __name__ == "__main__":
    main()
