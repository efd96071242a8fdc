"""The audit shipper's sustained rate into the embedded engine, and what an outage leaves in the spool.

    python -m load_tests.bench_audit [--events 100000] [--outage 60] [--rate 500]

Writes `--events` realistic audit events (two policy decisions each) into a fresh spool with the real
SpoolWriter, then runs the real Shipper (one process, pinned to one core) against a fresh embedded engine in a
temporary directory until the spool is empty. Reports events/s, bytes per event, and from those the spool
size and catch-up time after an outage of `--outage` seconds at `--rate` requests/s.
"""

import argparse
import os
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from gateway import codec
from gateway.audit import spool
from gateway.audit.chain import Signer
from gateway.audit.shipper import Shipper
from gateway.audit.store import connect


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
        stop = threading.Event()
        shipper = Shipper(lambda: store, directory, stop)
        thread = threading.Thread(target=shipper.run)
        started = time.perf_counter()
        thread.start()
        while spool.sealed_segments(directory) or shipper.shipped < args.events:
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        stop.set()
        thread.join()
        rate = args.events / elapsed
        per_event = size / args.events
        backlog = args.outage * args.rate
        print(
            f"events {args.events:,}: built+appended {append_us:.1f} µs each, spool {size / 1e6:.1f} MB "
            f"({per_event:.0f} bytes/event)"
        )
        print(f"shipper (one core, embedded engine): {rate:,.0f} events/s ({elapsed:.1f} s)")
        print(
            f"after a {args.outage:g} s outage at {args.rate:g} req/s: {backlog:,.0f} events, "
            f"{backlog * per_event / 1e6:.1f} MB of spool, caught up in {backlog / max(rate - args.rate, 1):.1f} s "
            f"while new traffic continues at {args.rate:g} req/s"
        )
        verified = store.verify()
        print(f"verify: ok={verified.ok}, {verified.rows_checked:,} rows")


if __name__ == "__main__":
    main()
