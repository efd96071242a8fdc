"""The markdown report of the PII benchmark (`python -m load_tests.bench_pii`): `render` turns the analyzer
results and the gateway runs into the setup list, the pre-filter/Presidio and threads-vs-processes tables, the
latency, throughput and memory tables with a "What this shows" finding under each, the redaction check and the
notes. It only formats what the other modules measured.
"""

from __future__ import annotations

import datetime

from load_tests.bench_pii_analyzer import AnalyzerResults, PoolRow
from load_tests.bench_pii_common import (
    ACTIONS,
    ALL_ENTITIES,
    CONCURRENCY,
    LOAD_CORE,
    NER_MODEL,
    PATTERN_ENTITIES,
    PROMPT_CHARS,
    PROMPTS,
    SERVER_CORE,
    THRESHOLD,
    Ctx,
    delta,
    num,
    ratio,
)
from load_tests.bench_pii_gateway import GatewayRun, Sample
from load_tests.bench_report import NOISY_CPU, cpu_cell, machine, table


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
        "- Prompts over HTTP: "
        + (
            "each kind's prompt sent unchanged every time (`--repeat-prompts`): after the first, the gateway's "
            "analyses cache answers"
            if a.repeat_prompts
            else "every request's prompt unique (its last word random lowercase letters), so the analyses cache "
            "never answers: the cost of text the gateway has not seen"
        ),
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
