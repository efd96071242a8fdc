"""The shipper: the one process that moves audit events from the spool into ClickHouse.

    spool (segments sealed by the workers) → batches → AuditStore.insert (hash chain, signed checkpoint)
                                           → the segment is deleted only after the insert returned

It runs as a child of `gateway serve` (`gateway audit ship`), so the ClickHouse client, and with the embedded
engine chDB itself (hundreds of MB), live in this process only, never in a request worker; chDB allows one
process per data directory, and this is it. An insert that fails is retried with exponential backoff (up to
5 s between tries) while the spool grows on disk; a segment replayed after a crash between insert and delete
inserts nothing twice (AuditStore.insert skips the event ids it already has). What it is doing is written
to `<spool>/shipper.json`, which /readyz shows. While it runs it also answers the operators' reads on
`<spool>/shipper.sock` (gateway.audit.reads), since no other process may open the embedded engine.
"""

import gc
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from gateway import codec
from gateway.audit import spool
from gateway.audit.chain import Signer
from gateway.audit.process import STATUS_FILE
from gateway.audit.reads import LockedClient, ReadServer, socket_path
from gateway.audit.store import AuditStore, connect
from gateway.settings import Settings

log = logging.getLogger("gateway.audit.shipper")
BATCH = 10_000
IDLE = 0.1
MAX_BACKOFF = 5.0


class Shipper:
    def __init__(self, store_factory: Callable[[], AuditStore], directory: Path, stop: threading.Event) -> None:
        self.store_factory = store_factory
        self.directory = directory
        self.stop = stop
        self.shipped = 0
        self.torn_bytes = 0
        self.bad_records = 0
        self.last_error: str | None = None
        self.last_ship = 0.0
        self._store: AuditStore | None = None

    @property
    def store(self) -> AuditStore | None:
        """The store it ships to (None until connected): the read server uses it too."""
        return self._store

    def run(self) -> None:
        self._connect_until_stopped()
        while not self.stop.is_set():
            segments = spool.sealed_segments(self.directory)
            for segment in segments:
                if self.stop.is_set():
                    break
                self._ship(segment)
            self._status(len(segments))
            if not segments:
                self.stop.wait(IDLE)

    def _ship(self, segment: Path) -> None:
        """Insert a segment's events, then remove it.

        Meanwhile the cyclic garbage collector looks at young objects once per 100,000 new ones rather than
        700: the thousands of events of a segment make some ten containers each, none in a cycle (refcounting
        frees them), and collecting them over and over while they are decoded, normalised and hashed took a
        fifth of the shipper's time. It still runs, so a long outage's retries leave no garbage piling up.
        """
        thresholds = gc.get_threshold()
        gc.set_threshold(100_000, *thresholds[1:])
        try:
            records, torn = spool.read_segment(segment)
            events = self._decode(records)
            for batch in _batches(events, BATCH):
                self._insert(batch)
            spool.remove(segment)
        finally:
            gc.set_threshold(*thresholds)
        self.torn_bytes += torn
        self.shipped += len(events)
        self.last_ship = time.time()

    def _decode(self, records: Sequence[bytes]) -> list[dict[str, Any]]:
        """The records as event dicts, in one pass; one that is not a JSON object is counted, logged and skipped."""
        try:
            decoded = list(map(codec.loads, records))
        except codec.JSONDecodeError:  # a damaged record: decode them one by one
            decoded = []
            for record in records:
                try:
                    decoded.append(codec.loads(record))
                except codec.JSONDecodeError:
                    decoded.append(None)
        events = [event for event in decoded if isinstance(event, dict)]
        if len(events) < len(decoded):
            self.bad_records += len(decoded) - len(events)
            log.error("audit spool: %d records that are not JSON objects were skipped", len(decoded) - len(events))
        return events

    def _insert(self, batch: list[dict[str, Any]]) -> None:
        """Insert until it works; the store is kept across failures (it retries an unsigned checkpoint)."""
        delay = 0.2
        while True:
            try:
                store = self._store or self._connect()
                store.insert(batch)
                self.last_error = None
                return
            except Exception as exc:  # the sink is down or refuses: keep the segment, retry
                self.last_error = f"{type(exc).__name__}: {exc}"[:500]
                log.warning("audit insert failed, retrying in %.1f s: %s", delay, self.last_error)
                self._status(None)
                if self.stop.wait(delay):
                    raise SystemExit(0) from None
                delay = min(MAX_BACKOFF, delay * 2)

    def _connect(self) -> AuditStore:
        self._store = self.store_factory()
        return self._store

    def _connect_until_stopped(self) -> None:
        """Connect and migrate at start, so the tables exist and /readyz says whether the sink is reachable."""
        delay = 0.2
        while not self.stop.is_set():
            try:
                self._connect()
                self.last_error = None
                self._status(0)
                return
            except Exception as exc:
                self.last_error = f"cannot open the audit store: {type(exc).__name__}: {exc}"[:500]
                log.warning("%s; retrying in %.1f s", self.last_error, delay)
                self._status(None)
                self.stop.wait(delay)
                delay = min(MAX_BACKOFF, delay * 2)

    def _status(self, backlog: int | None) -> None:
        status = {
            "pid": os.getpid(),
            "state": "error" if self.last_error else "ok",
            "last_error": self.last_error,
            "shipped": self.shipped,
            "last_ship": self.last_ship,
            "backlog_segments": backlog,
            "torn_bytes": self.torn_bytes,
            "bad_records": self.bad_records,
            "updated": time.time(),
        }
        path = self.directory / STATUS_FILE
        tmp = path.with_name(f".{STATUS_FILE}.{os.getpid()}")
        tmp.write_bytes(codec.dumps(status))
        os.replace(tmp, path)


def _batches(events: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(events), size):
        yield events[start : start + size]


def store_factory(settings: Settings) -> Callable[[], AuditStore]:
    assert settings.audit is not None and settings.audit_url is not None
    audit, url = settings.audit, settings.audit_url

    def make() -> AuditStore:
        signer = Signer.load_or_create(settings.near(audit.signing_key))
        store = connect(url, audit.database, signer, settings.audit_public_keys(), chain=settings.audit_chain)
        store.migrate(audit.retention_days)
        return store

    return make


def main(settings: Settings, watch_stdin: bool = False) -> int:
    """`gateway audit ship`: ship until SIGTERM/SIGINT or the end of stdin, then finish the segment in hand."""
    assert settings.audit is not None
    directory = settings.near(settings.audit.spool_dir)
    directory.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    _stop_on_signals(stop)
    if watch_stdin:
        threading.Thread(target=_stop_at_end_of_stdin, args=(stop,), name="parent-watch", daemon=True).start()
    factory = store_factory(settings)

    def make() -> AuditStore:
        store = factory()
        _stop_on_signals(stop)  # the embedded engine installs signal handlers of its own when it starts
        store.client = LockedClient(store.client)  # shared with the read server's threads
        return store

    shipper = Shipper(make, directory, stop)
    reads = ReadServer(socket_path(directory), lambda: shipper.store).start()
    try:
        shipper.run()
    finally:
        reads.close()
    return 0


def _stop_on_signals(stop: threading.Event) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())


def _stop_at_end_of_stdin(stop: threading.Event) -> None:
    """`gateway serve` keeps our stdin open; its end (closed, or the server died) means: finish and exit."""
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except (OSError, ValueError):
        pass
    stop.set()
