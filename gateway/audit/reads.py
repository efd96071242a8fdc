"""Reading the audit store while the gateway runs: the operators' commands, reports and tests all come here.

The embedded engine allows one process per data directory, and while `gateway serve` runs its shipper is that
process. So the shipper also answers reads, on a Unix socket in the spool directory (the directory and the
socket are the installation user's only, mode 700/600: the same people who may read the data directory):

    gateway audit verify|tail|query, gateway report ...   → open_reader(settings)
        the store is free (gateway stopped, or a ClickHouse server)  → LocalReader: an AuditStore in this process
        the shipper holds it                                          → RemoteReader: one request per call

    one request:  {"op": "select"|"verify"|"query"|"tail", "args": {...}}\\n
    one answer:   {"ok": true, "result": ...}\\n   or   {"ok": false, "error": "..."}\\n

Every `select` runs with `readonly=2` (settings may change, data may not), and its values come back as JSON
values in both readers (datetimes as ISO strings, UUIDs as strings, tuples as lists), so a report reads the same
types through either. The shipper serialises its client between shipping and reads: a long verify slows shipping
(page by page, never stops it), and the spool absorbs the difference.
"""

import contextlib
import hashlib
import os
import socket
import socketserver
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from gateway import codec
from gateway.audit.chain import VerifyResult
from gateway.settings import Settings

SOCKET = "shipper.sock"
READ_ONLY = {"readonly": 2}
MAX_REQUEST = 1 << 20
_SUN_PATH_MAX = 100  # sockaddr_un holds 108 bytes; keep a margin


class ReadError(Exception):
    """A read could not be done (no store, a refused statement, the shipper went away)."""


class Reader(Protocol):
    def select(self, sql: str, parameters: Mapping[str, Any] | None = None) -> list[list[Any]]: ...
    def verify(self, start: datetime | None = None, end: datetime | None = None) -> VerifyResult: ...
    def query(self, **filters: Any) -> list[dict[str, Any]]: ...
    def tail(self, n: int = 20) -> list[dict[str, Any]]: ...
    def close(self) -> None: ...


def socket_path(directory: Path) -> Path:
    """The shipper's socket: in the spool directory, or (a path too long for a socket) a private runtime one."""
    path = directory.resolve() / SOCKET
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        return path
    digest = hashlib.sha256(os.fsencode(path)).hexdigest()[:24]
    private = Path(tempfile.gettempdir()) / f"gateway-audit-{os.getuid()}"
    private.mkdir(mode=0o700, exist_ok=True)
    return private / f"{digest}.sock"


def plain(rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """Database values as JSON values: what a RemoteReader's caller gets, so a LocalReader gives it too."""
    result: list[list[Any]] = codec.loads(codec.dumps_lenient(rows))
    return result


def select(store: Any, sql: str, parameters: Mapping[str, Any] | None) -> list[list[Any]]:
    """One read-only statement on the store's client, its rows as JSON values."""
    return plain(store.client.query(sql, parameters=dict(parameters or {}), settings=READ_ONLY).result_rows)


class LocalReader:
    """Reads in this process, through an AuditStore (`gateway.audit.store`)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def select(self, sql: str, parameters: Mapping[str, Any] | None = None) -> list[list[Any]]:
        return select(self.store, sql, parameters)

    def verify(self, start: datetime | None = None, end: datetime | None = None) -> VerifyResult:
        result: VerifyResult = self.store.verify(start, end)
        return result

    def query(self, **filters: Any) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.store.query(**filters)
        return rows

    def tail(self, n: int = 20) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.store.tail(n)
        return rows

    def close(self) -> None:
        self.store.close()


class RemoteReader:
    """Reads done by the running shipper, over its socket (one connection per call)."""

    def __init__(self, path: Path, timeout: float | None = None) -> None:
        self.path = path
        self.timeout = timeout

    def select(self, sql: str, parameters: Mapping[str, Any] | None = None) -> list[list[Any]]:
        rows: list[list[Any]] = self._call("select", sql=sql, parameters=dict(parameters or {}))
        return rows

    def verify(self, start: datetime | None = None, end: datetime | None = None) -> VerifyResult:
        return VerifyResult(**self._call("verify", start=_iso(start), end=_iso(end)))

    def query(self, **filters: Any) -> list[dict[str, Any]]:
        filters = {name: _iso(value) if isinstance(value, datetime) else value for name, value in filters.items()}
        rows: list[dict[str, Any]] = self._call("query", **filters)
        return rows

    def tail(self, n: int = 20) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self._call("tail", n=n)
        return rows

    def close(self) -> None:
        pass

    def _call(self, op: str, **args: Any) -> Any:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(str(self.path))
                sock.sendall(codec.dumps({"op": op, "args": args}) + b"\n")
                with sock.makefile("rb") as answer:
                    line = answer.readline()
        except OSError as exc:
            raise ReadError(f"the audit shipper did not answer on {self.path}: {exc}") from exc
        if not line:
            raise ReadError("the audit shipper closed the connection without an answer")
        reply = codec.loads(line)
        if not reply.get("ok"):
            raise ReadError(str(reply.get("error")))
        return reply.get("result")


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _moment(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def dispatch(store: Any, op: str, args: Mapping[str, Any]) -> Any:
    """What the shipper does for one request (`store`: its AuditStore, whose client is shared under a lock)."""
    if op == "select":
        return select(store, str(args["sql"]), args.get("parameters") or {})
    if op == "verify":
        return asdict(store.verify(_moment(args.get("start")), _moment(args.get("end"))))
    if op == "query":
        filters = dict(args)
        for name in ("start", "end"):
            filters[name] = _moment(filters.get(name))
        return store.query(**filters)
    if op == "tail":
        return store.tail(int(args.get("n", 20)))
    raise ReadError(f"unknown read {op!r}")


class LockedClient:
    """One ClickHouse client shared by the shipping thread and the read server: one call at a time."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.lock = threading.Lock()

    def query(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            return self.client.query(*args, **kwargs)

    def insert(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            return self.client.insert(*args, **kwargs)

    def insert_arrow(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            return self.client.insert_arrow(*args, **kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            return self.client.command(*args, **kwargs)

    def close(self) -> None:
        with self.lock:
            self.client.close()


class _Handler(socketserver.StreamRequestHandler):
    server: "ReadServer"

    def handle(self) -> None:
        try:
            request = codec.loads(self.rfile.readline(MAX_REQUEST))
            store = self.server.current_store()
            if store is None:
                raise ReadError("the audit shipper is not connected to its store yet")
            reply = {"ok": True, "result": dispatch(store, str(request["op"]), request.get("args") or {})}
        except Exception as exc:  # every failure is an answer, never a dead connection
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000]}
        self.wfile.write(codec.dumps_lenient(reply) + b"\n")


class ReadServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The shipper's read socket, served by a daemon thread until `close`."""

    daemon_threads = True

    def __init__(self, path: Path, current_store: Callable[[], Any]) -> None:
        self.current_store = current_store
        self.path = path
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # left by a shipper that was killed
        old = os.umask(0o177)
        try:
            super().__init__(str(path), _Handler)
        finally:
            os.umask(old)
        self._thread = threading.Thread(target=self.serve_forever, name="audit-reads", daemon=True)

    def start(self) -> "ReadServer":
        self._thread.start()
        return self

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def open_reader(settings: Settings, timeout: float | None = None) -> Reader:
    """A reader of the configured store: in this process if it is free, else through the running shipper."""
    from gateway.audit.store import StoreLocked, connect  # the ClickHouse client loads only for reads

    audit, url = settings.audit, settings.audit_url
    assert audit is not None and url is not None
    try:
        return LocalReader(connect(url, database=audit.database, public_keys=settings.audit_public_keys()))
    except StoreLocked:
        path = socket_path(settings.near(audit.spool_dir))
        if not path.exists():
            raise
        return RemoteReader(path, timeout)
