"""The audit shipper's sustained rate into the embedded engine, and what an outage leaves in the spool.

    python -m load_tests.bench_audit [--events 100000] [--outage 60] [--rate 500] [--phases]

Writes `--events` realistic audit events (two policy decisions each) into a fresh spool with the real
SpoolWriter, then runs the real Shipper (one process, pinned to one core) against a fresh embedded engine in a
temporary directory until the spool is empty. Reports events/s, bytes per event, and from those the spool
size and catch-up time after an outage of `--outage` seconds at `--rate` requests/s.

The rate is given twice: per second of wall time, and per second of the process's CPU time (every thread,
the engine's included, all on the one core). On a busy machine other processes take turns on that core and
the wall-time rate drops with them; the CPU-time rate is what the shipper costs. `--phases` also gives the CPU
time of each step in the shipper's thread (per 5,000 events; the insert includes the engine's work in that
thread), the rest of that thread's time, and the time of the engine's own threads (merges, insert pipeline).
"""

import argparse
import contextlib
import functools
import os
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway import codec
from gateway.audit import rows, spool
from gateway.audit import store as store_module
from gateway.audit.chain import Signer
from gateway.audit.shipper import Shipper
from gateway.audit.store import AuditStore, connect

PHASE_EVENTS = 5_000  # the phase split is given per this many events


def event(n: int) -> dict[str, object]:
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    decision = {"policy": "baseline", "rule": "prompt-injection", "kind": "injection", "action": "warn"}
    return {
        "event_id": str(uuid.uuid4()), "ts": now, "ended": now, "request_id": uuid.uuid4().hex,
        "key_id": "0123456789ab", "key_name": "reports-bot", "team": f"team-{n % 7}", "end_user": f"user-{n % 100}",
        "route": "chat/completions", "model_requested": "gpt-4o-mini", "model_served": "gpt-4o-mini-2024-07-18",
        "provider": "openai", "deployment": "openai:api.openai.com", "attempts": 1, "status": 200,
        "error_type": "", "error_code": "", "stream": n % 3 == 0, "client_disconnected": False,
        "policy_revision": "aad2c443fa78b358",
        "decisions": [{**decision, "where": "input", "detail": "ignore_previous_instructions"},
                      {**decision, "rule": "lions", "kind": "terms", "where": "output", "detail": "lion"}],
        "pii": [], "tokens_in": 412, "tokens_out": 128, "cost_micro_usd": 143, "latency_ms": 812.5,
        "upstream_ms": 790.1, "ttft_ms": 0.0, "client_ip": "10.0.3.17", "user_agent": "OpenAI/Python 1.99.0",
        "prompt_hash": "ab" * 32, "answer_hash": "cd" * 32, "body": "",
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--outage", type=float, default=60)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--phases", action="store_true", help="time each step of the shipper")
    args = parser.parse_args()
    os.sched_setaffinity(0, {0})
    with tempfile.TemporaryDirectory(prefix="audit-bench-") as work:
        directory = Path(work) / "spool"
        writer = spool.SpoolWriter(directory, max_bytes=1 << 40)
        writer.start()
        started = time.perf_counter()
        for n in range(args.events):
            writer.append(codec.dumps(event(n)))
        writer.close()
        append_us = (time.perf_counter() - started) / args.events * 1e6
        size = spool.spool_bytes(directory)
        signer = Signer.load_or_create(Path(work) / "key")
        store = connect(f"chdb://{work}/db", signer=signer)
        store.migrate()
        phases: dict[str, float] = defaultdict(float)
        with timed_phases(store, phases) if args.phases else contextlib.nullcontext():
            elapsed, cpu, shipper_cpu = ship(store, directory, args.events)
        rate = args.events / elapsed
        per_event = size / args.events
        backlog = args.outage * args.rate
        print(
            f"events {args.events:,}: built+appended {append_us:.1f} µs each, spool {size / 1e6:.1f} MB "
            f"({per_event:.0f} bytes/event)"
        )
        print(
            f"shipper (one core, embedded engine): {rate:,.0f} events/s ({elapsed:.1f} s); "
            f"{args.events / cpu:,.0f} events per CPU second ({cpu:.1f} s of CPU)"
        )
        if args.phases:
            print_phases(phases, shipper_cpu, cpu, args.events)
        print(
            f"after a {args.outage:g} s outage at {args.rate:g} req/s: {backlog:,.0f} events, "
            f"{backlog * per_event / 1e6:.1f} MB of spool, caught up in {backlog / max(rate - args.rate, 1):.1f} s "
            f"while new traffic continues at {args.rate:g} req/s"
        )
        started = time.perf_counter()
        verified = store.verify()
        took = time.perf_counter() - started
        print(f"verify: ok={verified.ok}, {verified.rows_checked:,} rows in {took:.1f} s")


def ship(store: AuditStore, directory: Path, events: int) -> tuple[float, float, float]:
    """Run the shipper until the spool is empty: wall seconds, CPU seconds of the whole process and of the
    shipper's thread."""
    stop = threading.Event()
    shipper = Shipper(lambda: store, directory, stop)
    thread_cpu: list[float] = []

    def run() -> None:
        started = time.thread_time()
        shipper.run()
        thread_cpu.append(time.thread_time() - started)

    thread = threading.Thread(target=run)
    started, cpu = time.perf_counter(), time.process_time()
    thread.start()
    while spool.sealed_segments(directory) or shipper.shipped < events:
        time.sleep(0.05)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    stop.set()
    thread.join()
    return elapsed, cpu, thread_cpu[0]


@contextlib.contextmanager
def timed_phases(store: AuditStore, phases: dict[str, float]) -> Iterator[None]:
    """Add the CPU time of the calling thread spent in each step of the shipper to `phases` while in the block."""
    steps: list[tuple[Any, str, str]] = [
        (spool, "read_segment", "read segment"),
        (Shipper, "_decode", "decode JSON"),
        (rows, "to_columns", "normalise rows"),
        (AuditStore, "_stored_ids", "duplicate check"),
        (store_module, "hash_rows", "hash chain"),
        (rows, "to_table", "build Arrow table"),
        (store.client, "insert_arrow", "insert"),
        (AuditStore, "_sign_pending", "sign checkpoint"),
        (spool, "remove", "remove segment"),
    ]
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in steps]
    for owner, name, label in steps:
        setattr(owner, name, _timed(getattr(owner, name), label, phases))
    try:
        yield
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)


def _timed(function: Callable[..., Any], label: str, phases: dict[str, float]) -> Callable[..., Any]:
    @functools.wraps(function)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            phases[label] += time.thread_time() - started

    return timed


def print_phases(phases: dict[str, float], shipper_cpu: float, cpu: float, events: int) -> None:
    scale = PHASE_EVENTS / events * 1000
    print(f"CPU time per {PHASE_EVENTS:,} events (ms, share):")
    rest = [("other (shipper)", shipper_cpu - sum(phases.values())), ("engine threads", cpu - shipper_cpu)]
    for label, seconds in [*phases.items(), *rest]:
        print(f"  {label:<18} {seconds * scale:6.1f} ms  {seconds / cpu:4.0%}")


if __name__ == "__main__":
    main()
