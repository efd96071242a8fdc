"""The benchmark's markdown report: throughput table, gateway/bare ratios, added latency, streaming, RSS."""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Iterable

from load_tests.bench_procs import Server
from load_tests.bench_stream import StreamResult
from load_tests.bench_wrk import WrkResult


def ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


def table(header: list[str], rows: Iterable[list]) -> list[str]:
    rows = list(rows)
    assert all(len(row) == len(header) for row in rows), "every row needs one cell per column"
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def errors_cell(result: WrkResult) -> str:
    if not result.errors:
        return "0"
    return f"**{result.errors}** ⚠ ({result.non_2xx} non-2xx, {result.socket_errors} socket)"


NOISY_CPU = 15.0


def percent(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0f}"


def cpu_cell(value: float) -> str:
    """Foreign CPU during a run, flagged when it is enough to distort the numbers."""
    if math.isnan(value):
        return "-"
    return f"**{value:.0f}** ⚠" if value > NOISY_CPU else f"{value:.0f}"


def throughput(results: list[WrkResult]) -> list[str]:
    rows = [
        [
            r.target,
            r.client,
            r.concurrency,
            f"{r.rps:,.0f}",
            ms(r.p50_ms),
            ms(r.p99_ms),
            errors_cell(r),
            percent(r.server_cpu),
            cpu_cell(r.foreign_cpu),
        ]
        for r in results
    ]
    header = ["target", "client", "concurrency", "req/s", "p50 ms", "p99 ms", "errors", "server CPU %", "other CPU %"]
    return table(header, rows)


def ratios(results: list[WrkResult]) -> list[str]:
    """Gateway req/s over each bare proxy's req/s, per concurrency."""
    gateway = {r.concurrency: r for r in results if r.target == "gateway"}
    bare = [r for r in results if r.target == "bare proxy"]
    clients = list(dict.fromkeys(r.client for r in bare))
    if not gateway or not bare:
        return ["(needs both the gateway and a bare proxy run)"]
    rows = []
    for concurrency, g in gateway.items():
        by_client = {r.client: r for r in bare if r.concurrency == concurrency}
        cells = [f"{g.rps / by_client[c].rps:.2f}" if c in by_client and by_client[c].rps else "-" for c in clients]
        rows.append([concurrency, f"{g.rps:,.0f}", *cells])
    return table(["concurrency", "gateway req/s", *[f"gateway / bare ({c})" for c in clients]], rows)


def routing_cost(results: list[WrkResult]) -> list[str]:
    """The gateway with several deployments behind one name over the gateway with one, per concurrency."""
    single = {r.concurrency: r for r in results if r.target == "gateway"}
    routed = [r for r in results if r.target == "gateway (routed)"]
    if not single or not routed:
        return ["(not measured: needs --routed-deployments and a gateway run)"]
    rows = [
        [r.concurrency, r.client, f"{single[r.concurrency].rps:,.0f}", f"{r.rps:,.0f}",
         f"{r.rps / single[r.concurrency].rps:.2f}" if single[r.concurrency].rps else "-"]
        for r in routed
        if r.concurrency in single
    ]  # fmt: skip
    return table(["concurrency", "routed as", "1 deployment req/s", "routed req/s", "routed / 1 deployment"], rows)


def policy_cost(results: list[WrkResult], variant: str = "gateway + policies") -> list[str]:
    """A gateway variant (enforcing policies, recording an audit trail) over the plain gateway, per concurrency."""
    plain = {r.concurrency: r for r in results if r.target == "gateway"}
    enforced = [r for r in results if r.target == variant and r.concurrency in plain]
    if not enforced:
        return [f"(not measured: needs a `{variant}` and a gateway run)"]
    rows = [
        [r.concurrency, r.client, f"{plain[r.concurrency].rps:,.0f}", f"{r.rps:,.0f}",
         f"{r.rps / plain[r.concurrency].rps:.2f}" if plain[r.concurrency].rps else "-",
         f"{r.p50_ms - plain[r.concurrency].p50_ms:+.2f}", f"{r.p99_ms - plain[r.concurrency].p99_ms:+.2f}"]
        for r in enforced
    ]  # fmt: skip
    header = ["concurrency", "variant", "gateway req/s", f"{variant} req/s", "ratio", "Δp50 ms", "Δp99 ms"]
    return table(header, rows)


def added_latency(results: list[WrkResult]) -> list[str]:
    """Gateway minus direct p50/p99 at the lowest concurrency measured."""
    lowest = min((r.concurrency for r in results), default=None)
    direct = next((r for r in results if r.target == "direct" and r.concurrency == lowest), None)
    gateway = next((r for r in results if r.target == "gateway" and r.concurrency == lowest), None)
    if direct is None or gateway is None:
        return ["(needs both a direct and a gateway run)"]
    return [
        f"At concurrency {lowest}: p50 +{gateway.p50_ms - direct.p50_ms:.2f} ms "
        f"({direct.p50_ms:.2f} → {gateway.p50_ms:.2f}), p99 +{gateway.p99_ms - direct.p99_ms:.2f} ms "
        f"({direct.p99_ms:.2f} → {gateway.p99_ms:.2f})."
    ]


def streaming(results: list[StreamResult]) -> list[str]:
    rows = [
        [
            s.target,
            s.concurrency,
            s.requests,
            ms(s.ttfb_p50_ms),
            ms(s.ttfb_p99_ms),
            ms(s.total_p50_ms),
            ms(s.total_p99_ms),
            f"**{s.errors}** ⚠" if s.errors else "0",
            percent(s.server_cpu),
            cpu_cell(s.foreign_cpu),
        ]
        for s in results
    ]
    header = [
        "target",
        "concurrency",
        "requests",
        "TTFB p50 ms",
        "TTFB p99 ms",
        "total p50 ms",
        "total p99 ms",
        "errors",
        "server CPU %",
        "other CPU %",
    ]
    return table(header, rows)


def memory(servers: list[Server]) -> list[str]:
    def mb(kb: int | None) -> str:
        return f"{kb / 1024:.1f}" if kb else "-"

    rows = [[s.name, s.pid, mb(s.rss_kb.get("idle")), mb(s.rss_kb.get("after load"))] for s in servers]
    return table(["process", "pid", "idle RSS MB", "after load RSS MB"], rows)


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({model}), Linux {platform.release()}, Python {platform.python_version()}"


def render(
    title: str,
    setup: list[str],
    results: list[WrkResult],
    streams: list[StreamResult],
    servers: list[Server],
    notes: list[str],
) -> str:
    parts = [f"# {title}", "", *setup, "", "## Throughput: non-streaming chat completions (wrk)", ""]
    parts += throughput(results)
    parts += ["", "## Gateway vs bare pass-through", "", *ratios(results)]
    parts += ["", "## Latency the gateway adds over the mock", "", *added_latency(results)]
    parts += ["", "## Routing cost: several deployments behind one model name", "", *routing_cost(results)]
    parts += ["", "## Policy cost: the gateway enforcing a policy directory", "", *policy_cost(results)]
    parts += ["", "## Audit cost: the gateway recording its audit trail", "", *policy_cost(results, "gateway + audit")]
    parts += ["", "## Streaming chat completions", "", *(streaming(streams) if streams else ["(not measured)"])]
    parts += ["", "## Memory (VmRSS, process and children)", "", *memory(servers)]
    parts += [
        "",
        "*server CPU %*: CPU used by the server under test (for `direct`, the mock) during the run, in % of one "
        "core; well below 100 means the server was waiting rather than working.",
        "",
        f"*other CPU %*: CPU used during the run by processes that are not part of the benchmark, in % of "
        f"one core; above {NOISY_CPU:.0f} % (⚠) the machine was shared and that row is not trustworthy.",
    ]
    if notes:
        parts += ["", "## Notes", "", *[f"- {n}" for n in notes]]
    return "\n".join(parts) + "\n"
