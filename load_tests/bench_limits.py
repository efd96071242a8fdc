"""What rate limits and budgets cost, measured as an interleaved A/B so that the machine's drift cancels out.

    python -m load_tests.bench_limits [--rounds 5] [--duration 5] [--concurrency 1,32]
                                      [--variants redis,memory] [--out load_tests/reports/bench-limits-ab-<date>.md]

Every server is started once and stays up: the mock upstream and redis-server (core 1, with wrk), and one
gateway per target (core 0, only the one under load is busy):

    direct              the mock itself (the baseline of every benchmark)
    gateway + policies  a one-rule policy directory (any model allowed): the gateway without limits
    limits (redis)      rate_limit rpm + tpm + concurrent per key and a monthly team budget, counted in Redis
    limits (memory)     the same rules, counted in the process (the embedded default)

The limits never refuse under this load, so every request pays a full admission and settlement. Each round
runs every target at every concurrency, in an order that rotates from round to round; the report gives the
median over rounds of each figure and of each round's ratio to `gateway + policies` measured minutes apart
at most. On a shared VM, single runs of the same target drift by 20-30 %; ratios taken within a round do
not. Also reported: the gateway's CPU per request (from /proc, utime + stime over the run) and Redis's time
per script call (INFO commandstats over the measured rounds).

`--paired` loads each limits gateway at the same time as `gateway + policies` (two wrk, same concurrency):
both share core 0 through every change of the machine's speed, so the ratio of their CPU per request is
what the limits cost, free of drift (the throughput ratio of a paired run is not the product's: a gateway
that waits on Redis leaves the core to the other one).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from load_tests import bench_procs as procs
from load_tests import bench_wrk
from load_tests.bench import (
    CHAT_PATH,
    GATEWAY_YAML,
    LIMIT_POLICIES,
    LOAD_CORE,
    REPO,
    SERVER_CORE,
    UPSTREAM_KEY,
    gateway_key,
    python_module,
    redis_script_time,
)
from load_tests.bench_cpu import process_cpu
from load_tests.bench_report import machine, table

POLICIES = "policies:\n  - name: bench-trivial\n    rules:\n      - {name: any-model, kind: models, allow: ['*']}\n"
PRICE = "    price: {input: 1, output: 2}\n"
BASELINE = "gateway + policies"


@dataclass
class Target:
    name: str
    server: procs.Server
    authorization: str
    script: Path = Path()


@dataclass
class Sample:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us: float  # server CPU per request


@dataclass
class Results:
    samples: dict[tuple[str, int], list[Sample]] = field(default_factory=dict)
    ratios: dict[tuple[str, int], list[float]] = field(default_factory=dict)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    today = datetime.date.today().isoformat()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (the report gives medians)")
    parser.add_argument("--duration", type=float, default=5, help="seconds per wrk run")
    parser.add_argument("--concurrency", default="1,32", help="comma-separated wrk connection counts")
    parser.add_argument("--variants", default="redis,memory", help="limits backends to measure: redis, memory")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of unrecorded load per target first")
    parser.add_argument(
        "--paired", action="store_true", help="load each limits gateway together with the baseline (CPU ratio)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "load_tests" / "reports" / f"bench-limits-ab-{today}.md")
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c]
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = set(args.variants) - {"redis", "memory"}
    if unknown:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))} (redis, memory)")
    return args


def start_gateway(work: Path, name: str, mock_url: str, limits: str | None) -> Target:
    """A gateway on core 0: `limits` None (policies only), '' (limits in the process) or a Redis URL."""
    port = procs.free_port()
    folder = work / name.replace(" ", "-").replace("(", "").replace(")", "")
    (folder / "policies").mkdir(parents=True)
    text = GATEWAY_YAML.format(port=port, mock_url=f"{mock_url}") + PRICE + "audit: false\n"
    (folder / "policies" / "p.yaml").write_text(POLICIES if limits is None else LIMIT_POLICIES)
    text += f"policies: {{dir: {folder / 'policies'}}}\n"
    if limits:
        text += f"limits: {{redis_url: '{limits}'}}\n"
    config = folder / "gateway.yaml"
    config.write_text(text)
    key = gateway_key(config, folder)
    argv = python_module("gateway", "serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port))
    env = {"PYTHONPATH": str(REPO), "MOCK_UPSTREAM_KEY": UPSTREAM_KEY}
    server = procs.start(name.replace(" ", "_"), argv, SERVER_CORE, f"http://127.0.0.1:{port}", work, env=env)
    return Target(name, server, f"Bearer {key}")


def run_once(target: Target, concurrency: int, duration: float) -> Sample:
    before = process_cpu(target.server.pid)
    url = target.server.url + CHAT_PATH
    result = bench_wrk.measure(url, target.script, target.name, "-", concurrency, duration, LOAD_CORE)
    used = process_cpu(target.server.pid) - before  # CPU seconds
    cpu_us = used / result.requests * 1e6 if result.requests else float("nan")
    return Sample(result.rps, result.p50_ms, result.p99_ms, result.errors, cpu_us)


def measure(args: argparse.Namespace, targets: list[Target], redis: procs.Server | None) -> Results:
    for target in targets:
        if args.warmup:
            bench_wrk.run_wrk(
                target.server.url + CHAT_PATH, target.script, max(args.concurrency), args.warmup, LOAD_CORE
            )
    if redis is not None:
        port = redis.url.rsplit(":", 1)[1].split("/")[0]
        subprocess.run(["redis-cli", "-p", port, "config", "resetstat"], capture_output=True, check=False)
    results = Results()
    if args.paired:
        return measure_paired(args, targets, results)
    for round_no in range(args.rounds):
        shift = round_no % len(targets)
        order = targets[shift:] + targets[:shift]
        for concurrency in args.concurrency:
            got = {t.name: run_once(t, concurrency, args.duration) for t in order}
            for name, sample in got.items():
                results.samples.setdefault((name, concurrency), []).append(sample)
                if name not in ("direct", BASELINE) and BASELINE in got:
                    ratio = sample.rps / got[BASELINE].rps
                    results.ratios.setdefault((name, concurrency), []).append(ratio)
            line = "  ".join(f"{n} {s.rps:,.0f}/s p50 {s.p50_ms:.2f}" for n, s in got.items())
            print(f"round {round_no + 1} c={concurrency}: {line}", flush=True)
    return results


def measure_paired(args: argparse.Namespace, targets: list[Target], results: Results) -> Results:
    """Each limits gateway under load together with the baseline; the ratio is of CPU per request."""
    base = next(t for t in targets if t.name == BASELINE)
    others = [t for t in targets if t.name not in ("direct", BASELINE)]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for round_no in range(args.rounds):
            for concurrency in args.concurrency:
                for other in others:
                    pair = [pool.submit(run_once, t, concurrency, args.duration) for t in (base, other)]
                    got_base, got_other = (future.result() for future in pair)
                    results.samples.setdefault((f"{BASELINE} (with {other.name})", concurrency), []).append(got_base)
                    results.samples.setdefault((other.name, concurrency), []).append(got_other)
                    ratio = got_base.cpu_us / got_other.cpu_us
                    results.ratios.setdefault((other.name, concurrency), []).append(ratio)
                    print(
                        f"round {round_no + 1} c={concurrency}: {BASELINE} {got_base.rps:,.0f}/s "
                        f"{got_base.cpu_us:.0f} us/req, {other.name} {got_other.rps:,.0f}/s "
                        f"{got_other.cpu_us:.0f} us/req, CPU ratio {ratio:.2f}",
                        flush=True,
                    )
    return results


def paired_report(args: argparse.Namespace, targets: list[Target], results: Results) -> list[str]:
    med = statistics.median
    rows = []
    for concurrency in args.concurrency:
        for target in targets:
            if target.name in ("direct", BASELINE):
                continue
            base = results.samples[(f"{BASELINE} (with {target.name})", concurrency)]
            mine = results.samples[(target.name, concurrency)]
            ratios = results.ratios[(target.name, concurrency)]
            base_cpu, my_cpu = med(s.cpu_us for s in base), med(s.cpu_us for s in mine)
            rows.append(
                [
                    target.name,
                    concurrency,
                    f"{med(s.rps for s in base):,.0f} / {med(s.rps for s in mine):,.0f}",
                    f"{base_cpu:.0f}",
                    f"{my_cpu:.0f}",
                    f"{my_cpu - base_cpu:+.0f}",
                    f"{med(ratios):.2f}",
                    f"{min(ratios):.2f} to {max(ratios):.2f}",
                    sum(s.errors for s in base + mine),
                ]
            )
    header = ["limits", "concurrency", "req/s baseline / limits", "baseline CPU µs/req", "limits CPU µs/req"]
    header += ["added CPU µs/req", "CPU ratio (baseline / limits)", "ratio range", "errors"]
    lines = ["## Paired: CPU per request, loaded at the same time", "", *table(header, rows)]
    lines += [
        "",
        "*CPU ratio*: the baseline's CPU per request over the limits gateway's, each round measured while both "
        "were under load on the same core; it is the throughput ratio a CPU-bound gateway would show.",
        "",
    ]
    return lines


def report(args: argparse.Namespace, targets: list[Target], results: Results, notes: list[str]) -> str:
    lines = [
        f"# Limits A/B benchmark — {datetime.datetime.now().isoformat(timespec='minutes')}",
        "",
        f"- Machine: {machine()}",
        f"- {args.rounds} interleaved rounds of {args.duration:g} s per target and concurrency (order rotating), "
        f"{args.warmup:g} s warm-up per target; figures are medians over rounds",
        f"- Request body: `{bench_wrk.CHAT_BODY}`",
        "- Pinning: gateways on core 0 (one loaded at a time); mock, redis-server and wrk on core 1",
        "- Limits: " + LIMIT_POLICIES.splitlines()[-2].strip() + "; " + LIMIT_POLICIES.splitlines()[-1].strip(),
        "",
    ]
    if args.paired:
        lines += paired_report(args, targets, results)
    else:
        lines += throughput_report(args, targets, results)
    lines += ["## Memory (VmRSS)", ""]
    lines += table(
        ["process", "idle MB", "after load MB"],
        [
            [t.name, f"{t.server.rss_kb.get('idle', 0) / 1024:.1f}", f"{t.server.rss_kb.get('after', 0) / 1024:.1f}"]
            for t in targets
        ],
    )
    if notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def throughput_report(args: argparse.Namespace, targets: list[Target], results: Results) -> list[str]:
    med = statistics.median
    lines = ["## Throughput and latency", ""]
    rows = []
    for concurrency in args.concurrency:
        base = results.samples.get((BASELINE, concurrency))
        for target in targets:
            samples = results.samples[(target.name, concurrency)]
            ratios = results.ratios.get((target.name, concurrency))
            p50, p99 = med(s.p50_ms for s in samples), med(s.p99_ms for s in samples)
            added = "-"
            if base and ratios is not None:
                added = f"{p50 - med(s.p50_ms for s in base):+.2f} / {p99 - med(s.p99_ms for s in base):+.2f}"
            spread = f"{min(ratios):.2f} to {max(ratios):.2f}" if ratios else "-"
            rows.append(
                [
                    target.name,
                    concurrency,
                    f"{med(s.rps for s in samples):,.0f}",
                    f"{p50:.2f}",
                    f"{p99:.2f}",
                    sum(s.errors for s in samples),
                    f"{med(s.cpu_us for s in samples):.0f}",
                    f"{med(ratios):.2f}" if ratios else "-",
                    spread,
                    added,
                ]
            )
    header = ["target", "concurrency", "req/s", "p50 ms", "p99 ms", "errors", "server CPU µs/req"]
    header += [f"ratio to {BASELINE}", "ratio range", "added p50 / p99 ms"]
    lines += table(header, rows)
    lines += ["", "*server CPU µs/req*: the server process's utime + stime over the run, per request answered.", ""]
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="gateway-bench-limits-") as name:
        work = Path(name)
        servers: list[procs.Server] = []
        try:
            port = procs.free_port()
            argv_mock = python_module(
                "load_tests.mock_upstream", "--host", "127.0.0.1", "--port", str(port), "--api-key", UPSTREAM_KEY
            )
            mock = procs.start(
                "mock", argv_mock, LOAD_CORE, f"http://127.0.0.1:{port}", work, env={"PYTHONPATH": str(REPO)}
            )
            servers.append(mock)
            procs.wait_ready(mock, "/health")
            redis = None
            if "redis" in args.variants:
                redis = procs.start_redis(LOAD_CORE, work)
                servers.append(redis)
            targets = [Target("direct", mock, f"Bearer {UPSTREAM_KEY}")]
            targets.append(start_gateway(work, BASELINE, mock.url, None))
            if redis is not None:
                targets.append(start_gateway(work, "limits (redis)", mock.url, redis.url))
            if "memory" in args.variants:
                targets.append(start_gateway(work, "limits (memory)", mock.url, ""))
            for target in targets:
                if target.server is not mock:
                    servers.append(target.server)
                    procs.wait_ready(target.server, "/healthz", timeout=120)
                slug = target.name.replace(" ", "_").replace("(", "").replace(")", "").replace("+", "")
                target.script = bench_wrk.lua_script(work / f"{slug}.lua", target.authorization)
            results = measure(args, targets, redis)
            for target in targets:
                target.server.note_rss("after")
            if redis is not None:
                notes.append(redis_script_time(redis.url))
        finally:
            for server in reversed(servers):
                procs.stop(server)
    text = report(args, targets, results, notes)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    print(f"report written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
