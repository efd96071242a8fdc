"""The benchmark, in one run: mock upstream direct, bare pass-through proxies, and the gateway, under wrk.

    python -m load_tests.bench [--duration 10] [--concurrency 1,32,128] [--clients aiohttp,httpx-aiohttp]
                               [--out load_tests/reports/bench-<date>.md] [--gateway-cmd '...']

Layout on a 2-core machine: every proxy under test (bare proxy, gateway) runs alone on core 0; the mock
upstream, wrk and the streaming client share core 1. The mock requires `Bearer sk-mock`, so a gateway that
does not send its configured upstream key shows up as errors. Everything listens on 127.0.0.1 only; every
process started here is stopped by PID (SIGTERM, then SIGKILL) in a `finally`.

The gateway is started from a temporary `gateway.yaml` pointing at the mock, with a key from
`python -m gateway keys create`; if the `gateway` package cannot be imported, it is skipped with a note.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import importlib.util
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from load_tests import bench_procs as procs
from load_tests import bench_stream, bench_wrk
from load_tests.bench_cpu import CpuWindow
from load_tests.bench_report import NOISY_CPU, machine, render

REPO = Path(__file__).resolve().parent.parent
SERVER_CORE, LOAD_CORE = 0, 1
UPSTREAM_KEY = "sk-mock"
QUIET_CPU = 10.0
CHAT_PATH = "/v1/chat/completions"
DEFAULT_GATEWAY_CMD = "{python} -m gateway serve --config {config} --host 127.0.0.1 --port {port}"
GATEWAY_YAML = """\
listen: {{host: 127.0.0.1, port: {port}}}
models:
  - name: mock-model
    provider: openai_compatible
    base_url: {mock_url}/v1
    api_key: env:MOCK_UPSTREAM_KEY
"""


@dataclass
class Run:
    """Everything one benchmark run collects."""

    args: argparse.Namespace
    work: Path
    servers: list = field(default_factory=list)
    results: list = field(default_factory=list)
    streams: list = field(default_factory=list)
    notes: list = field(default_factory=list)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    today = datetime.date.today().isoformat()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per wrk run")
    parser.add_argument("--concurrency", default="1,32,128", help="comma-separated wrk connection counts")
    parser.add_argument("--clients", default="aiohttp,httpx-aiohttp", help="bare proxy clients to measure")
    parser.add_argument("--out", type=Path, default=REPO / "load_tests" / "reports" / f"bench-{today}.md")
    parser.add_argument(
        "--gateway-cmd", default=DEFAULT_GATEWAY_CMD, help="command template with {python} {config} {port}"
    )
    parser.add_argument("--no-gateway", action="store_true", help="skip the gateway")
    parser.add_argument(
        "--routed-deployments", type=int, default=3, help="also run the gateway with N weighted deployments (0: skip)"
    )
    parser.add_argument(
        "--policies",
        default=str(REPO / "policies"),
        help="also run the gateway enforcing this policy directory ('' to skip); the shipped baseline by default",
    )
    parser.add_argument(
        "--audit", action=argparse.BooleanOptionalAction, default=True, help="also run the gateway with its audit trail"
    )
    parser.add_argument(
        "--shipper-core",
        choices=("gateway", "load"),
        default="gateway",
        help="the audit shipper's core: the gateway's (it competes with the requests) or the load generator's",
    )
    parser.add_argument(
        "--limits",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the gateway with rate limits and a budget on every request, counted in Redis (started here)",
    )
    parser.add_argument(
        "--tracing",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the gateway with tracing and metrics on, exported over OTLP to a loopback sink that discards",
    )
    parser.add_argument("--tracing-sample", type=float, default=1.0, help="telemetry.sample_ratio of that run")
    parser.add_argument(
        "--stream-requests", type=int, default=200, help="streaming requests per measurement, 0 to skip"
    )
    parser.add_argument("--chunk-delay-ms", type=float, default=0, help="mock delay between SSE chunks")
    parser.add_argument(
        "--quiet-timeout",
        type=float,
        default=30,
        help="seconds to wait for other processes to go quiet before each measurement",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement; the report shows the median")
    parser.add_argument("--retries", type=int, default=2, help="re-runs of measurements disturbed by other processes")
    parser.add_argument("--warmup", type=float, default=1, help="seconds of unrecorded load before each target")
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c]
    args.clients = [c for c in args.clients.split(",") if c]
    return args


def python_module(*argv: str) -> list[str]:
    return [sys.executable, "-m", *argv]


def load(run: Run, target: str, client: str, server: procs.Server, authorization: str) -> None:
    """wrk at every concurrency against the server's chat endpoint, after a short warm-up."""
    url = server.url + CHAT_PATH
    script = bench_wrk.lua_script(run.work / f"{target}-{client}.lua".replace(" ", "_"), authorization)
    if run.args.warmup:
        bench_wrk.run_wrk(url, script, max(run.args.concurrency), run.args.warmup, LOAD_CORE)
    for concurrency in run.args.concurrency:
        duration = run.args.duration
        wrk = functools.partial(bench_wrk.measure, url, script, target, client, concurrency, duration, LOAD_CORE)
        result = measured(run, wrk, server, key=lambda r: r.rps)
        print(
            f"  {target:10} {client:14} c={concurrency:<4} {result.rps:9,.0f} req/s  p50 {result.p50_ms:.2f} ms"
            f"  p99 {result.p99_ms:.2f} ms  errors {result.errors}  server CPU {result.server_cpu:.0f}%"
            f"  other CPU {result.foreign_cpu:.0f}%",
            flush=True,
        )
        run.results.append(result)


def running_pids(run: Run) -> list[int]:
    return [server.pid for server in run.servers if server.popen.poll() is None]


def wait_quiet(run: Run) -> None:
    """Wait (at most --quiet-timeout seconds) until processes outside the benchmark leave the CPU alone."""
    deadline = time.monotonic() + run.args.quiet_timeout
    while time.monotonic() < deadline:
        window = CpuWindow(running_pids(run))
        time.sleep(0.5)
        if window.foreign_percent() < QUIET_CPU:
            return


def measured(run: Run, measure: Callable[[], Any], server: procs.Server, key: Callable[[Any], float]) -> Any:
    """The median (by `key`) of --repeat runs of `measure`, each on a quiet machine.

    A run disturbed by other processes is re-done, at most --retries times in all; if every run was
    disturbed, the least disturbed one is returned (and flagged in the report).
    """
    quiet: list[Any] = []
    noisy: list[Any] = []
    while len(quiet) < run.args.repeat and len(noisy) <= run.args.retries:
        wait_quiet(run)
        window = CpuWindow(running_pids(run))
        result = measure()
        result.foreign_cpu = window.foreign_percent()
        result.server_cpu = window.process_percent(server.pid)
        (quiet if result.foreign_cpu <= NOISY_CPU else noisy).append(result)
    if not quiet:
        return min(noisy, key=lambda r: r.foreign_cpu)
    return sorted(quiet, key=key)[len(quiet) // 2]


def stream_load(run: Run, target: str, server: procs.Server, authorization: str) -> None:
    """Streaming TTFB and total time: sequential, then a burst of 32 concurrent clients."""
    total, headers = run.args.stream_requests, {"authorization": authorization}
    for concurrency in (1, 32) if total else ():
        streams = functools.partial(bench_stream.measure, server.url + CHAT_PATH, headers, target, concurrency, total)
        result = measured(run, streams, server, key=lambda r: r.ttfb_p50_ms)
        print(
            f"  {target:10} stream c={concurrency:<3} TTFB p50 {result.ttfb_p50_ms:.2f} ms "
            f"p99 {result.ttfb_p99_ms:.2f} ms  total p50 {result.total_p50_ms:.2f} ms  errors {result.errors}"
            f"  server CPU {result.server_cpu:.0f}%  other CPU {result.foreign_cpu:.0f}%",
            flush=True,
        )
        run.streams.append(result)


def start_server(run: Run, name: str, argv: list[str], core: int, ready_path: str, **ready: Any) -> procs.Server:
    """Start a server on a free port (`{port}` in `argv`), pinned to `core`, and wait until it answers."""
    port = procs.free_port()
    argv = [a.replace("{port}", str(port)) for a in argv]
    url = f"http://127.0.0.1:{port}"
    server = procs.start(name, argv, core, url, run.work, env={"PYTHONPATH": str(REPO)})
    run.servers.append(server)
    procs.wait_ready(server, ready_path, **ready)
    return server


def bench_mock(run: Run) -> procs.Server:
    argv = python_module(
        "load_tests.mock_upstream",
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        "--api-key",
        UPSTREAM_KEY,
        "--chunk-delay-ms",
        str(run.args.chunk_delay_ms),
    )
    mock = start_server(run, "mock", argv, LOAD_CORE, "/health")
    print(f"mock upstream pid {mock.pid} at {mock.url} (core {LOAD_CORE})", flush=True)
    load(run, "direct", "-", mock, f"Bearer {UPSTREAM_KEY}")
    stream_load(run, "direct", mock, f"Bearer {UPSTREAM_KEY}")
    return mock


def bench_bare_proxy(run: Run, mock: procs.Server, client: str) -> None:
    argv = python_module("load_tests.bare_proxy", "--port", "{port}", "--upstream", mock.url, "--client", client)
    body = orjson.dumps(bench_wrk.CHAT_BODY)
    headers = {"authorization": f"Bearer {UPSTREAM_KEY}", "content-type": "application/json"}
    proxy = start_server(run, f"bare proxy ({client})", argv, SERVER_CORE, CHAT_PATH, body=body, headers=headers)
    try:
        load(run, "bare proxy", client, proxy, f"Bearer {UPSTREAM_KEY}")
        proxy.note_rss("after load")
    finally:
        procs.stop(proxy)


def gateway_missing() -> str | None:
    """Why the gateway cannot be benchmarked, or None if it can."""
    sys.path.insert(0, str(REPO))
    try:
        spec = importlib.util.find_spec("gateway")
        if spec is None or spec.origin is None or not Path(spec.origin).is_relative_to(REPO):
            return "the `gateway` package cannot be imported from this repository"
    finally:
        sys.path.remove(str(REPO))
    return None


def gateway_key(config: Path, work: Path) -> str:
    """A virtual key for team `bench` from `python -m gateway keys create` (prints only the key)."""
    argv = python_module("gateway", "keys", "create", "--config", str(config), "--team", "bench")
    env = {**os.environ, "PYTHONPATH": str(REPO), "MOCK_UPSTREAM_KEY": UPSTREAM_KEY}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=work, env=env, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"`gateway keys create` failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return lines[-1].strip()


def routed_yaml(port: int, mock_url: str, count: int) -> str:
    """mock-model served by `count` weighted deployments (all the mock), so every request is routed."""
    deployments = "".join(
        f"      - {{name: d{i}, provider: openai_compatible, base_url: {mock_url}/v1, model: mock-model, "
        f"api_key: env:MOCK_UPSTREAM_KEY}}\n"
        for i in range(count)
    )
    return (
        f"listen: {{host: 127.0.0.1, port: {port}}}\nmodels:\n  - name: mock-model\n    strategy: weighted\n"
        f"    deployments:\n{deployments}"
    )


# Limits that never refuse under the benchmark's load, so every request pays the full admission and settlement:
# RPM, TPM and concurrency per key, and a monthly team budget (mock-model is priced in LIMITS_YAML).
LIMIT_POLICIES = """\
policies:
  - name: bench-limits
    rules:
      - {name: per-key, kind: rate_limit, per: [key], rpm: 100000000, tpm: 1000000000000, concurrent: 100000}
      - {name: team-budget, kind: budget, per: [team], usd: 1000000000, period: month}
"""


def start_redis(run: Run) -> str:
    """A redis-server on a free loopback port, on the load core, stopped with the other servers."""
    server = procs.start_redis(LOAD_CORE, run.work)
    run.servers.append(server)
    return server.url


def start_otlp_sink(run: Run) -> str:
    """An OTLP/HTTP sink that discards what it gets, on the load core (load_tests.otlp_sink)."""
    argv = python_module("load_tests.otlp_sink", "--host", "127.0.0.1", "--port", "{port}")
    return start_server(run, "otlp sink", argv, LOAD_CORE, "/health").url


def bench_gateway(
    run: Run,
    mock: procs.Server,
    deployments: int = 1,
    policies: str = "",
    audit: bool = False,
    redis: str = "",
    otlp: str = "",
) -> None:
    port = procs.free_port()
    suffix = ("-policies" if policies else "") + ("-audit" if audit else "") + ("-limits" if redis else "")
    suffix += "-telemetry" if otlp else ""
    config = run.work / f"gateway-{deployments}{suffix}.yaml"
    text = (
        GATEWAY_YAML.format(port=port, mock_url=mock.url)
        if deployments == 1
        else routed_yaml(port, mock.url, deployments)
    )
    target, client = ("gateway", "-") if deployments == 1 else ("gateway (routed)", f"{deployments} deployments")
    if policies:
        text += f"policies: {{dir: {Path(policies).resolve()}}}\n"
        target, client = "gateway + policies", Path(policies).name
    if not audit:
        text += "audit: false\n"
    else:
        text += "audit: {spool_dir: audit-spool}\n"
        target, client = "gateway + audit", "chdb"
    if redis:
        limits_dir = run.work / "limit-policies"
        limits_dir.mkdir(exist_ok=True)
        (limits_dir / "limits.yaml").write_text(LIMIT_POLICIES)
        text = text.replace(
            "api_key: env:MOCK_UPSTREAM_KEY\n", "api_key: env:MOCK_UPSTREAM_KEY\n    price: {input: 1, output: 2}\n", 1
        )
        text += f"policies: {{dir: {limits_dir}}}\nlimits: {{redis_url: '{redis}'}}\n"
        target, client = "gateway + limits", "redis"
    if otlp:
        sampled = run.args.tracing_sample
        text += f"telemetry: {{tracing: true, metrics: true, otlp_endpoint: '{otlp}', sample_ratio: {sampled}}}\n"
        target, client = "gateway + telemetry", f"otlp, sampled {sampled:g}"
    config.write_text(text)
    key = gateway_key(config, run.work)
    fields = {"python": sys.executable, "config": str(config), "port": str(port)}
    argv = [part.format(**fields) for part in shlex.split(run.args.gateway_cmd)]
    server = procs.start(
        target.replace(" + ", "-").replace(" (routed)", f"-{deployments}-deployments"),
        argv,
        SERVER_CORE,
        f"http://127.0.0.1:{port}",
        run.work,
        env={"PYTHONPATH": str(REPO), "MOCK_UPSTREAM_KEY": UPSTREAM_KEY},
    )
    run.servers.append(server)
    procs.wait_ready(server, "/healthz", timeout=120)
    print(f"{server.name} pid {server.pid} at {server.url} (core {SERVER_CORE})", flush=True)
    if audit:
        place_shipper(run, server.pid)
    check_gateway(run, server.url, key)
    try:
        load(run, target, client, server, f"Bearer {key}")
        if deployments == 1:
            stream_load(run, target, server, f"Bearer {key}")
        server.note_rss("after load")
        if redis:
            run.notes.append(redis_script_time(redis))
    finally:
        procs.stop(server)


def redis_script_time(url: str) -> str:
    """What the limits scripts cost Redis itself over the whole run (INFO commandstats: calls, us per call)."""
    port = url.rsplit(":", 1)[1].split("/")[0]
    done = subprocess.run(
        ["redis-cli", "-p", port, "info", "commandstats"], capture_output=True, text=True, check=False
    )
    stats = {}
    for line in done.stdout.splitlines():
        name, _, fields = line.partition(":")
        if name.startswith("cmdstat_"):
            stats[name[8:]] = dict(field.split("=") for field in fields.split(","))
    calls = {name: stat for name, stat in stats.items() if name in ("evalsha", "eval")}
    if not calls:
        return f"Redis commandstats: no script calls recorded ({done.stderr.strip() or 'empty answer'})"
    parts = [
        f"{name} {int(s['calls']):,} calls, {float(s['usec_per_call']):.1f} us per call" for name, s in calls.items()
    ]
    return "Redis time in the limits scripts (INFO commandstats, whole run): " + "; ".join(parts)


def place_shipper(run: Run, gateway_pid: int) -> None:
    """The audit shipper inherits the gateway's core; `--shipper-core load` moves it to the load generator's."""
    import psutil

    shippers = [c for c in psutil.Process(gateway_pid).children() if "ship" in " ".join(c.cmdline())]
    core = LOAD_CORE if run.args.shipper_core == "load" else SERVER_CORE
    for shipper in shippers:
        os.sched_setaffinity(shipper.pid, {core})
    run.notes.append(f"audit shipper (pid {[s.pid for s in shippers]}) on core {core} ({run.args.shipper_core})")


def check_gateway(run: Run, url: str, key: str) -> None:
    """One request before the load, so a misconfigured gateway is explained rather than just counted."""
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    status = procs.probe(url + CHAT_PATH, orjson.dumps(bench_wrk.CHAT_BODY), headers)
    if status != 200:
        run.notes.append(f"gateway answered a sample chat request with status {status}")


def execute(run: Run) -> None:
    mock = bench_mock(run)
    for client in run.args.clients:
        try:
            bench_bare_proxy(run, mock, client)
        except RuntimeError as exc:
            run.notes.append(f"bare proxy ({client}) failed: {exc}")
    missing = "skipped (--no-gateway)" if run.args.no_gateway else gateway_missing()
    if missing:
        run.notes.append(f"gateway not measured: {missing}")
        print(f"gateway not measured: {missing}", flush=True)
    else:
        try:
            bench_gateway(run, mock)
            if run.args.policies:
                bench_gateway(run, mock, policies=run.args.policies)
            if run.args.audit:
                bench_gateway(run, mock, audit=True)
            if run.args.limits:
                bench_gateway(run, mock, redis=start_redis(run))
            if run.args.tracing:
                bench_gateway(run, mock, otlp=start_otlp_sink(run))
            if run.args.routed_deployments > 1:
                bench_gateway(run, mock, run.args.routed_deployments)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            run.notes.append(f"gateway run failed: {exc}")
            print(f"gateway run failed: {exc}", flush=True)
    mock.note_rss("after load")


def setup_lines(args: argparse.Namespace) -> list[str]:
    return [
        f"- Machine: {machine()}",
        f"- wrk: 1 thread, {args.duration:g} s per run, concurrency {', '.join(map(str, args.concurrency))}, "
        f"{args.warmup:g} s warm-up per target, median of {args.repeat} run(s) per row",
        f"- Request body: `{orjson.dumps(bench_wrk.CHAT_BODY).decode()}`",
        f"- Pinning: proxy under test on core {SERVER_CORE}; mock, wrk and streaming client on core {LOAD_CORE}",
        f"- Mock upstream: raw ASGI on uvicorn (uvloop, httptools), chunk delay {args.chunk_delay_ms:g} ms",
        "- Streaming: `stream: true` + include_usage; TTFB is to the first body bytes",
    ]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.sched_setaffinity(0, {LOAD_CORE})
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as work:
        run = Run(args, Path(work))
        try:
            execute(run)
        finally:
            for server in run.servers:
                procs.stop(server)
    title = f"Gateway benchmark — {datetime.datetime.now().isoformat(timespec='minutes')}"
    report = render(title, setup_lines(args), run.results, run.streams, run.servers, run.notes)
    print("\n" + report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(f"report written to {args.out}")


if __name__ == "__main__":
    main()
