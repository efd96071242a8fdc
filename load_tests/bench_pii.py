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

The code is split by section: `load_tests.bench_pii_common` (constants, prompts, gateway variants, `Ctx`,
shared helpers), `load_tests.bench_pii_analyzer` (1.), `load_tests.bench_pii_gateway` (2.) and
`load_tests.bench_pii_report` (the markdown report); this module parses the options and runs them.
"""

from __future__ import annotations

import argparse
import datetime
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

from gateway.settings import PiiSettings
from load_tests import bench_procs as procs
from load_tests.bench_pii_analyzer import AnalyzerResults, bench_analyzer
from load_tests.bench_pii_common import LOAD_CORE, REPO, VARIANTS, Ctx
from load_tests.bench_pii_gateway import GatewayRun, bench_gateway, start_mock
from load_tests.bench_pii_report import render


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
    parser.add_argument(
        "--repeat-prompts",
        action="store_true",
        help="send each kind's prompt unchanged every time (the analyses cache answers repeats); by default every "
        "request's prompt is unique",
    )
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
