"""The audit trail's local write-ahead spool: every event is on disk before the last byte of its response.

Each gateway process appends events (one JSON object per line) to its own segment file with one `os.write`
on an `O_APPEND` descriptor, so an event survives a crash of the process at once. One background thread per
writer fsyncs the segment in groups every `fsync_interval` (a machine crash loses at most that) and seals it;
a request waits for a lock and a write, never for an fsync.

    <writer>-<seq>.new    a segment being created (a moment only: it is locked, then renamed to .open)
    <writer>-<seq>.open   the segment a live writer appends to; the writer holds an exclusive flock on it
    <writer>-<seq>.seg    sealed (fsynced, renamed, directory fsynced): the shipper's to insert and remove

`<writer>` is `<hostname>-<pid>-<random hex>`, new at every process start, so uvicorn workers sharing the
directory never share a file. A segment is sealed once its first event is `seal_after` old or it outgrew
`segment_bytes`. The shipper (another process) takes `sealed_segments`, inserts `read_segment`'s records,
and calls `remove` only once the insert is confirmed; an .open file whose flock is free belongs to a dead
writer and is sealed by `sealed_segments` itself, and the torn last line of a killed writer is skipped and
counted. `append` raises `SpoolFull` when the directory would outgrow `max_bytes` (a cheap estimate: the
directory total, re-measured every 0.5 s, plus what this writer appended since; with N writers the budget
can be overshot by what the others append within 0.5 s).

Create and start a writer in the process that appends (after any fork): each worker owns one.
"""

import contextlib
import errno
import fcntl
import logging
import os
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NEW, OPEN, SEALED = ".new", ".open", ".seg"
REFRESH_EVERY = 0.5  # seconds between two measurements of the directory total
STALE_NEW = 60.0  # a .new file this old was left by a writer killed while creating it

log = logging.getLogger("gateway.audit.spool")


class SpoolFull(Exception):
    """The spool is at its disk budget (or the disk is full): the event was not written."""


@dataclass
class _Segment:
    fd: int
    path: Path
    size: int = 0
    first_write: float = 0.0  # time.monotonic() of the first append; 0 while empty


class SpoolWriter:
    """One process's appender: a lock, the active segment, and the thread that fsyncs and seals it."""

    def __init__(
        self,
        directory: Path,
        *,
        segment_bytes: int = 8 * 1024 * 1024,
        max_bytes: int = 1024 * 1024 * 1024,
        fsync_interval: float = 0.01,
        seal_after: float = 0.5,
    ) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.max_bytes = max_bytes
        self.fsync_interval = fsync_interval
        self.seal_after = seal_after
        self.writer = writer_id()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._active: _Segment | None = None
        self._seq = 0
        self._appended = self._appended_bytes = self._refused = self._need = 0
        self._synced_bytes = self._fsyncs = self._sealed = 0
        self._last_fsync: float | None = None
        self._dir_bytes = self._bytes_at_scan = 0
        self._scanned = 0.0
        self._full = False
        self._last_error = ""

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the spool writer is already running")
        self.directory.mkdir(parents=True, exist_ok=True)
        self._active = self._open_segment()
        self._refresh_total()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="audit-spool-fsync", daemon=True)
        self._thread.start()

    def append(self, record: bytes) -> None:
        """Write one record (a single line) to the active segment; never fsyncs, raises SpoolFull."""
        if not record or b"\n" in record:
            raise ValueError("an audit record must be one non-empty line (no b'\\n' inside)")
        data = record + b"\n"
        with self._lock:
            segment = self._active
            if segment is None:
                raise RuntimeError("the spool writer is not running")
            if self._estimate() + len(data) > self.max_bytes:
                self._refuse(len(data), "the audit spool is at its disk budget")
            try:
                _write_all(segment.fd, data)
            except OSError as exc:
                with contextlib.suppress(OSError):  # leave no torn line in the middle of a segment
                    os.ftruncate(segment.fd, segment.size)
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    self._refuse(len(data), f"the audit spool's disk is full: {exc}")
                raise
            segment.size += len(data)
            segment.first_write = segment.first_write or time.monotonic()
            self._appended += 1
            self._appended_bytes += len(data)
            if self._full and self._estimate() + self._need <= self.max_bytes:
                self._full, self._need = False, 0  # room again for the record that was refused

    @property
    def full(self) -> bool:
        """An append was refused, and the spool has not shrunk enough since to take that record. A smaller record
        written meanwhile (the event of a request refused for this very reason) does not reopen it."""
        return self._full

    def close(self) -> None:
        """Stop the thread, then seal the active segment (or delete it if empty)."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        with self._lock:
            segment, self._active = self._active, None
            written = self._appended_bytes
        if segment is not None and segment.size:
            self._seal(segment, written)
        elif segment is not None:
            os.unlink(segment.path)
            os.close(segment.fd)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            last = self._last_fsync
            return {
                "writer": self.writer,
                "appended": self._appended,
                "appended_bytes": self._appended_bytes,
                "refused": self._refused,
                "fsyncs": self._fsyncs,
                "sealed_segments": self._sealed,
                "last_fsync_age": None if last is None else round(time.monotonic() - last, 3),
                "spool_bytes": self._estimate(),
                "full": self._full,
            }

    def _estimate(self) -> int:
        return self._dir_bytes + self._appended_bytes - self._bytes_at_scan

    def _refuse(self, size: int, message: str) -> None:
        self._refused += 1
        self._full, self._need = True, size
        raise SpoolFull(message)

    def _run(self) -> None:
        while not self._stop.wait(self.fsync_interval):
            try:
                self._tick()
                self._last_error = ""
            except Exception as exc:  # keep the thread alive: the next tick retries
                if str(exc) != self._last_error:
                    log.exception("audit spool: fsync or seal failed (retrying every tick)")
                self._last_error = str(exc)

    def _tick(self) -> None:
        now = time.monotonic()
        if now - self._scanned >= REFRESH_EVERY:
            self._refresh_total()
        segment = self._active  # replaced by this thread only (and by close, after joining it)
        if segment is None or not segment.size:
            return
        if segment.size >= self.segment_bytes or now - segment.first_write >= self.seal_after:
            self._rotate()
        elif self._appended_bytes != self._synced_bytes:
            written = self._appended_bytes
            self._fsync(segment.fd, written)

    def _refresh_total(self) -> None:
        before = self._appended_bytes  # appends during the scan are counted twice: on the safe side
        total = spool_bytes(self.directory)
        with self._lock:
            self._dir_bytes, self._bytes_at_scan = total, before
            if self._full and self._estimate() + self._need <= self.max_bytes:
                self._full = False
        self._scanned = time.monotonic()

    def _rotate(self) -> None:
        fresh = self._open_segment()
        with self._lock:
            old, self._active = self._active, fresh
            written = self._appended_bytes
        if old is not None:
            self._seal(old, written)

    def _seal(self, segment: _Segment, written: int) -> None:
        """fsync, rename to .seg, fsync the directory. Nothing writes to `segment` any more, so the lock is
        released whatever happens: if sealing fails, the shipper seals it as a dead writer's."""
        try:
            self._fsync(segment.fd, written)
            os.rename(segment.path, segment.path.with_suffix(SEALED))
            fsync_directory(self.directory)
            self._sealed += 1
        finally:
            os.close(segment.fd)

    def _fsync(self, fd: int, written: int) -> None:
        os.fsync(fd)
        self._synced_bytes = written
        self._fsyncs += 1
        self._last_fsync = time.monotonic()

    def _open_segment(self) -> _Segment:
        """Create under a .new name, lock, then rename: an .open file is never seen unlocked while alive."""
        self._seq += 1
        new = self.directory / f"{self.writer}-{self._seq:012d}{NEW}"
        fd = os.open(new, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path = new.with_suffix(OPEN)
            os.rename(new, path)
            fsync_directory(self.directory)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(new)
            raise
        return _Segment(fd, path)


def writer_id() -> str:
    host = re.sub(r"[^A-Za-z0-9.-]+", "_", socket.gethostname()) or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(4)}"


def sealed_segments(directory: Path) -> list[Path]:
    """Every sealed segment, dead writers' .open files sealed on the way, oldest first (mtime, then name)."""
    found: dict[Path, tuple[int, str]] = {}
    for path in directory.iterdir():
        if path.suffix == OPEN:
            sealed = _seal_abandoned(path)
        elif path.suffix == SEALED:
            sealed = path
        else:
            sealed = None
            if path.suffix == NEW:
                _remove_stale(path)
        with contextlib.suppress(FileNotFoundError):  # removed meanwhile by another shipper
            if sealed is not None:
                found[sealed] = (sealed.stat().st_mtime_ns, sealed.name)
    return sorted(found, key=found.__getitem__)


def read_segment(path: Path) -> tuple[list[bytes], int]:
    """The complete records of a segment, and how many bytes of a torn last line were left out."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    records = [line for line in data[:end].split(b"\n") if line.strip(b" \t\r\0")]
    return records, len(data) - end


def remove(path: Path) -> None:
    """Delete a shipped segment (no error if it is gone already)."""
    path.unlink(missing_ok=True)
    fsync_directory(path.parent)


def spool_bytes(directory: Path) -> int:
    """The size of all segments of all writers in the directory."""
    total = 0
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.endswith((OPEN, SEALED, NEW)):
                with contextlib.suppress(FileNotFoundError):
                    total += entry.stat(follow_symlinks=False).st_size
    return total


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _seal_abandoned(path: Path) -> Path | None:
    """Seal an .open file whose writer is dead (its flock is free); None while its writer is alive."""
    sealed = path.with_suffix(SEALED)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:  # its writer sealed it just now
        return sealed if sealed.exists() else None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        os.fsync(fd)
        try:
            os.rename(path, sealed)
        except FileNotFoundError:  # sealed by its writer between our open and our lock
            return sealed if sealed.exists() else None
        fsync_directory(path.parent)
        return sealed
    finally:
        os.close(fd)


def _remove_stale(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if time.time() - path.stat().st_mtime < STALE_NEW:
            return
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path.unlink()
        except BlockingIOError:
            pass
        finally:
            os.close(fd)
