"""The audit store: events into ClickHouse as a hash chain with signed checkpoints, verification, operator reads.

The same code runs on a ClickHouse server (`http://...` DSN) and on the embedded engine (`chdb:///dir` DSN,
one process per data directory), through clickhouse-connect's sync client.

    insert(events)   skip the event ids already stored (a batch replayed after a crash between the insert and
                     the spool's delete), chain the rest from the head (seq, prev_hash, hash), write them in
                     one insert, then sign a checkpoint of the batch's last row
    verify(...)      recompute the chain page by page in seq order and check every checkpoint's signature
    query / tail     what operators look at

`insert` must be called by ONE process and thread at a time for a database (the audit shipper): the chain is
one sequence, its head is read once and then kept in memory. A second writer would fork it, which verify reports.
"""

import fcntl
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from gateway.audit import rows, schema
from gateway.audit.chain import (
    GENESIS,
    Checkpoint,
    Signer,
    VerifyResult,
    checkpoint_message,
    epoch_ms,
    hash_values,
    iso_ms,
    public_key_id,
    walk,
)
from gateway.audit.schema import ALL_NAMES, CHECKPOINT_NAMES, CHECKPOINTS, EVENT_NAMES, EVENTS

__all__ = ["AuditStore", "StoreLocked", "VerifyResult", "connect"]

PAGE_SEQS = 20_000  # rows per verification page (plus the rows of a repeated seq)
EXPIRY_SLACK = timedelta(days=1)  # how much younger than the retention horizon a row after a gap may be
_ROW_COLUMNS = ", ".join(("seq", "prev_hash", "hash", *EVENT_NAMES))
# a Distributed table (cluster) queues inserts by default: the head read after a restart could miss them
_WRITE_THROUGH = {"distributed_foreground_insert": 1}


class StoreLocked(Exception):
    """The embedded engine's data directory is open in another process."""


@dataclass(frozen=True)
class _Pending:
    seq: int
    hash: str
    rows: int


class AuditStore:
    def __init__(
        self,
        client: Any,
        database: str = "gateway",
        signer: Signer | None = None,
        public_keys: Iterable[bytes] = (),
    ) -> None:
        self.client = client
        self.database = schema.check_database(database)
        self.signer = signer
        self.keys = {public_key_id(pem): pem for pem in public_keys}
        if signer is not None:
            self.keys[signer.public_key_id] = signer.public_pem
        self.events = f"{database}.{EVENTS}"
        self.checkpoints = f"{database}.{CHECKPOINTS}"
        self._head: tuple[int, str] | None = None
        self._unsigned: _Pending | None = None  # a batch sent whose checkpoint is not written yet

    def migrate(self, retention_days: int = schema.DEFAULT_RETENTION_DAYS) -> list[int]:
        return schema.migrate(self.client, self.database, retention_days)

    def close(self) -> None:
        self.client.close()

    def head(self) -> tuple[int, str]:
        """The last seq and its hash, or (0, GENESIS) for an empty chain."""
        rows = self.client.query(f"SELECT seq, hash FROM {self.events} ORDER BY seq DESC LIMIT 1").result_rows
        return (int(rows[0][0]), str(rows[0][1])) if rows else (0, GENESIS)

    def insert(self, events: Sequence[Mapping[str, Any]]) -> int:
        """Chain and store the events not stored yet, sign the batch; the number of rows inserted."""
        self._sign_pending()
        rows = self._new_rows(events)
        if not rows:
            return 0
        seq, prev = self._head or self.head()
        data = []
        for row in rows:
            values = [row[name] for name in EVENT_NAMES]
            seq, chain_hash = seq + 1, hash_values(prev, values)
            data.append([*values, seq, prev, chain_hash])
            prev = chain_hash
        self._head, self._unsigned = None, _Pending(seq, prev, len(data))
        self.client.insert(self.events, data, column_names=ALL_NAMES, settings=_WRITE_THROUGH)
        self._head = (seq, prev)
        self._sign_pending()
        return len(data)

    def _new_rows(self, events: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The events as rows, without repeats in the batch and without the ones already stored."""
        unique: dict[Any, dict[str, Any]] = {}
        for event in events:
            row = rows.to_row(event)
            unique.setdefault(row["event_id"], row)
        if not unique:
            return []
        stored = self._stored_ids(list(unique.values()))
        return [row for event_id, row in unique.items() if event_id not in stored]

    def _stored_ids(self, rows: list[dict[str, Any]]) -> set[Any]:
        """One SELECT, narrowed to the batch's teams and time span (a replayed event has the same ts and team).

        The ids go in as one literal: they are `str(UUID)`, only hex digits and dashes, and clickhouse-connect
        escapes a bound parameter character by character in Python (5000 ids: 25 ms, the literal: 1 ms).
        """
        times = [epoch_ms(row["ts"]) for row in rows]
        ids = ",".join(str(row["event_id"]) for row in rows)
        result = self.client.query(
            f"SELECT DISTINCT event_id FROM {self.events} WHERE team IN {{teams:Array(String)}} "
            "AND ts BETWEEN fromUnixTimestamp64Milli({lo:Int64}) AND fromUnixTimestamp64Milli({hi:Int64}) "
            f"AND event_id IN (SELECT toUUID(arrayJoin(splitByChar(',', '{ids}'))))",
            parameters={"teams": sorted({row["team"] for row in rows}), "lo": min(times), "hi": max(times)},
            settings={"max_query_size": len(ids) + 65536},
        )
        return {row[0] for row in result.result_rows}

    def _sign_pending(self) -> None:
        """Sign the last batch sent; after a failed insert, only if it did land (the head is exactly its end)."""
        pending = self._unsigned
        if pending is None:
            return
        if self.signer is None:
            self._unsigned = None
            return
        if self._head is None:
            self._head = self.head()
            if self._head != (pending.seq, pending.hash):
                self._unsigned = None  # it did not land: nothing to sign
                return
        created = datetime.now(UTC)
        message = checkpoint_message(pending.seq, pending.hash, pending.rows, created)
        self.client.insert(
            self.checkpoints,
            [[pending.seq, pending.hash, pending.rows, created, self.signer.public_key_id, self.signer.sign(message)]],
            column_names=CHECKPOINT_NAMES,
            settings=_WRITE_THROUGH,
        )
        self._unsigned = None

    def verify(self, start: datetime | None = None, end: datetime | None = None) -> VerifyResult:
        """Recompute the chain and check the checkpoints: all of it, or the stretch of seq holding [start, end).

        For a time range the stretch runs from the row before the first one in range (so that deleting the first
        is seen) to the checkpoint closing the last one, and the chain is taken on trust at its start.
        """
        anchor: str | None = GENESIS
        if start is None and end is None:
            lo, hi = 1, None
        else:
            bounds = self._range(start, end)
            if bounds is None:
                return VerifyResult(True, 0, 0, None)
            lo, hi = bounds
            anchor = GENESIS if lo == 1 else None
        rows = self._pages(EVENTS, _ROW_COLUMNS, lo, hi, "seq, event_id")
        checkpoints = (Checkpoint(*row) for row in self._pages(CHECKPOINTS, ", ".join(CHECKPOINT_NAMES), lo, hi, "seq"))
        return walk(rows, checkpoints, lo, anchor, self.keys, self._expired_before_ms())

    def _range(self, start: datetime | None, end: datetime | None) -> tuple[int, int | None] | None:
        where, parameters = _time_filter("ts", start, end)
        found = self._one(f"SELECT count(), min(seq), max(seq) FROM {self.events} WHERE {where}", parameters)
        where, parameters = _time_filter("created", start, end)
        signed = self._one(f"SELECT count(), min(seq), max(seq) FROM {self.checkpoints} WHERE {where}", parameters)
        spans = [(row[1], row[2]) for row in (found, signed) if row[0]]
        if not spans:
            return None
        lo, last = min(s[0] for s in spans), max(s[1] for s in spans)
        closing = self._one(
            f"SELECT count(), min(seq) FROM {self.checkpoints} WHERE seq >= {{last:UInt64}}", {"last": last}
        )
        return max(lo - 1, 1), (closing[1] if closing[0] else None)

    def _one(self, sql: str, parameters: Mapping[str, Any]) -> Sequence[Any]:
        return self.client.query(sql, parameters=dict(parameters)).result_rows[0]

    def _pages(self, table: str, columns: str, lo: int, hi: int | None, order: str) -> Iterator[Sequence[Any]]:
        """Rows with lo <= seq <= hi in seq order, one query per PAGE_SEQS seqs.

        A page is read whole rather than streamed: rows and checkpoints are read in step, and neither chDB nor a
        server session takes a second query while a stream is open.
        """
        at = lo
        while hi is None or at <= hi:
            top = at + PAGE_SEQS - 1 if hi is None else min(at + PAGE_SEQS - 1, hi)
            sql = f"SELECT {columns} FROM {self.database}.{table} WHERE seq BETWEEN {at} AND {top} ORDER BY {order}"
            page = self.client.query(sql).result_rows
            yield from page
            if not page:  # skip an empty stretch (a gap, or the end)
                after = self.client.query(
                    f"SELECT seq FROM {self.database}.{table} WHERE seq > {top} ORDER BY seq LIMIT 1"
                ).result_rows
                if not after:
                    return
                at = int(after[0][0])
            else:
                at = top + 1

    def _expired_before_ms(self) -> int:
        """Rows older than this may be missing because retention dropped them (0 if there is no TTL)."""
        days = schema.table_retention(self.client, self.database, EVENTS)
        if days is None:  # a Distributed table on a cluster: the TTL is on the local table
            days = schema.table_retention(self.client, self.database, f"{EVENTS}_local")
        if days is None:
            return 0
        return epoch_ms(datetime.now(UTC) - timedelta(days=days) + EXPIRY_SLACK)

    def query(
        self,
        team: str | None = None,
        key_id: str | None = None,
        model: str | None = None,
        status: int | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """The newest events matching every filter given (model: requested or served), newest first."""
        where, parameters = _time_filter("ts", start, end)
        for column, value in (("team", team), ("key_id", key_id), ("status", status)):
            if value is not None:
                where += f" AND {column} = {{{column}:{'UInt16' if column == 'status' else 'String'}}}"
                parameters[column] = value
        if model is not None:
            where += " AND (model_requested = {model:String} OR model_served = {model:String})"
            parameters["model"] = model
        parameters["limit"] = max(int(limit), 0)
        return self._events(f"WHERE {where} ORDER BY ts DESC, seq DESC LIMIT {{limit:UInt64}}", parameters)

    def tail(self, n: int = 20) -> list[dict[str, Any]]:
        """The last n events written, oldest first."""
        return self._events("ORDER BY seq DESC LIMIT {n:UInt64}", {"n": max(int(n), 0)})[::-1]

    def _events(self, clause: str, parameters: Mapping[str, Any]) -> list[dict[str, Any]]:
        result = self.client.query(f"SELECT {_ROW_COLUMNS} FROM {self.events} {clause}", parameters=dict(parameters))
        return [_to_event(row) for row in result.result_rows]


def _time_filter(column: str, start: datetime | None, end: datetime | None) -> tuple[str, dict[str, Any]]:
    """`start <= column < end` as SQL with parameters (either may be None; naive datetimes are UTC)."""
    where, parameters = "1", {}
    if start is not None:
        where += f" AND {column} >= fromUnixTimestamp64Milli({{start:Int64}})"
        parameters["start"] = epoch_ms(start)
    if end is not None:
        where += f" AND {column} < fromUnixTimestamp64Milli({{end:Int64}})"
        parameters["end"] = epoch_ms(end)
    return where, parameters


def _to_event(row: Sequence[Any]) -> dict[str, Any]:
    """A row read back → the event dict it was made from (times in ISO UTC), plus seq and hash."""
    event = dict(zip(EVENT_NAMES, row[3:], strict=True))
    event["event_id"] = str(event["event_id"])
    event["ts"], event["ended"] = iso_ms(epoch_ms(event["ts"])), iso_ms(epoch_ms(event["ended"]))
    event["decisions"] = [_item(d, schema.DECISION_FIELDS) for d in event["decisions"]]
    event["pii"] = [_item(p, schema.PII_FIELDS) for p in event["pii"]]
    event["seq"], event["hash"] = row[0], row[2]
    return event


def _item(value: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else dict(zip(fields, value, strict=True))


def connect(
    dsn: str,
    database: str = "gateway",
    signer: Signer | None = None,
    public_keys: Iterable[bytes] = (),
    **client_options: Any,
) -> AuditStore:
    """An AuditStore on `http(s)://user:password@host:port` (a server) or `chdb:///path/to/dir` (embedded)."""
    import clickhouse_connect  # loaded only where the audit store is used

    try:
        client = clickhouse_connect.get_client(dsn=dsn, **client_options)
    except Exception as exc:
        holder = _chdb_lock_holder(dsn)
        if holder is not None:
            raise StoreLocked(
                f"the embedded audit store {urlparse(dsn).path} is locked by another process ({holder}): "
                "the embedded engine allows one process per data directory"
            ) from exc
        raise
    return AuditStore(client, database, signer, public_keys)


def _chdb_lock_holder(dsn: str) -> str | None:
    """Who holds an embedded engine's directory (its `status` file, locked by the running engine), if anyone."""
    if not dsn.startswith("chdb:"):
        return None
    status = Path(urlparse(dsn).path) / "status"
    try:
        with open(status, "rb") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                first = handle.readline().decode(errors="replace").strip()
                return first or "unknown pid"
            fcntl.flock(handle, fcntl.LOCK_UN)
    except OSError:
        return None
    return None
