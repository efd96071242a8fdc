"""Section 1 of the PII benchmark (`python -m load_tests.bench_pii`): the analyzer in this process, no HTTP.
It times the pre-filter (`might_contain`) and Presidio's analysis with the pattern-only and the NER engine on
each 1 KB prompt, then measures analyses/s of the pattern-PII prompt with 1 and 2 threads and 1 and 2 spawned
processes; `bench_analyzer` returns the rows as `AnalyzerResults` for the report.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.pii import engine as pii_engine
from load_tests.bench_cpu import CpuWindow
from load_tests.bench_pii_common import (
    ALL_ENTITIES,
    NER_MODEL,
    PATTERN_ENTITIES,
    PROMPTS,
    THRESHOLD,
    Ctx,
    group_cpu,
    least_disturbed,
    percentile,
    self_cpu,
)


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
    pii_engine._state["patterns"] = engines["patterns"]  # as in a pool process: pattern entities over a blank tokenizer
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
