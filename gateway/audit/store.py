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
    Checkpoint,
    Signer,
    VerifyResult,
    checkpoint_message,
    epoch_ms,
    genesis,
    hash_rows,
    public_key_id,
    walk,
)
from gateway.audit.queries import ROW_COLUMNS, OperatorQueries, time_filter
from gateway.audit.schema import CHECKPOINT_NAMES, CHECKPOINTS, EVENTS

__all__ = ["AuditStore", "StoreLocked", "VerifyResult", "connect"]

PAGE_SEQS = 20_000  # rows per verification page (plus the rows of a repeated seq)
EXPIRY_SLACK = timedelta(days=1)  # how much younger than the retention horizon a row after a gap may be
# a Distributed table (cluster) queues inserts by default: the head read after a restart could miss them
_WRITE_THROUGH = {"distributed_foreground_insert": 1}


class StoreLocked(Exception):
    """The embedded engine's data directory is open in another process."""


@dataclass(frozen=True)
class _Pending:
    seq: int
    hash: str
    rows: int


class AuditStore(OperatorQueries):
    def __init__(
        self,
        client: Any,
        database: str = "gateway",
        signer: Signer | None = None,
        public_keys: Iterable[bytes] = (),
        chain: str = "",
    ) -> None:
        self.client = client
        self.database = schema.check_database(database)
        self.chain = chain  # the chain this store writes (verify reads them all)
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
        """The last seq of this store's chain and its hash, or (0, genesis) for an empty chain."""
        rows = self.client.query(
            f"SELECT seq, hash FROM {self.events} WHERE chain = {{chain:String}} ORDER BY seq DESC LIMIT 1",
            parameters={"chain": self.chain},
        ).result_rows
        return (int(rows[0][0]), str(rows[0][1])) if rows else (0, genesis(self.chain))

    def insert(self, events: Sequence[Mapping[str, Any]]) -> int:
        """Chain and store the events not stored yet, sign the batch; the number of rows inserted."""
        self._sign_pending()
        batch = rows.to_columns(events)
        columns = self._new_rows(batch)
        count = len(columns["event_id"])
        if count < len(batch["event_id"]):  # some were stored before: a replay, perhaps of an unsigned batch
            self._sign_replayed(batch)
        if not count:
            return 0
        seq, prev = self._head or self.head()
        hashes = hash_rows(prev, list(columns.values()))
        chained = {
            **columns,
            "seq": range(seq + 1, seq + count + 1),
            "prev_hash": [prev, *hashes[:-1]],
            "hash": hashes,
            "chain": [self.chain] * count,
        }
        seq, prev = seq + count, hashes[-1]
        self._head, self._unsigned = None, _Pending(seq, prev, count)
        self.client.insert_arrow(self.events, rows.to_table(chained), settings=_WRITE_THROUGH)
        self._head = (seq, prev)
        self._sign_pending()
        return count

    def _new_rows(self, columns: dict[str, list[Any]]) -> dict[str, list[Any]]:
        """The batch's columns without repeats and without the events already stored."""
        ids = columns["event_id"]
        if not ids:
            return columns
        keep: Sequence[int] = range(len(ids))
        if len(set(ids)) < len(ids):  # the first of each id
            keep = sorted({event_id: at for at, event_id in reversed(list(enumerate(ids)))}.values())
        stored = self._stored_ids(columns)
        if stored:
            keep = [at for at in keep if ids[at] not in stored]
        if len(keep) == len(ids):
            return columns
        return {name: [values[at] for at in keep] for name, values in columns.items()}

    def _stored_ids(self, columns: Mapping[str, list[Any]]) -> set[str]:
        """The batch's event ids already stored: only rows of the batch's teams and time span can hold one (a
        replayed event has the same team and ts).

        That span usually holds few rows (a segment spans a second or so): they are read and compared here,
        which costs the engine a third of a lookup by id. If it holds many (a long request widens it), the
        ids are looked up by a second SELECT. They go in as one literal: they are canonical UUID text
        (rows.to_columns), only hex digits and dashes, and clickhouse-connect escapes a bound parameter
        character by character in Python (5000 ids: 25 ms, the literal: 1 ms).
        """
        ids, times = columns["event_id"], columns["ts"]
        span = {"teams": sorted(set(columns["team"])), "lo": min(times), "hi": max(times)}
        where = (
            f"FROM {self.events} WHERE team IN {{teams:Array(String)}} "
            "AND ts BETWEEN fromUnixTimestamp64Milli({lo:Int64}) AND fromUnixTimestamp64Milli({hi:Int64})"
        )
        limit = 2 * len(ids) + 1000  # reading a stored id costs about what sending one does
        stored = self.client.query(f"SELECT toString(event_id) {where} LIMIT {limit}", parameters=span).result_rows
        if len(stored) < limit:
            return set(ids).intersection(row[0] for row in stored)
        literal = ",".join(ids)
        result = self.client.query(
            f"SELECT DISTINCT toString(event_id) {where} "
            f"AND event_id IN (SELECT toUUID(arrayJoin(splitByChar(',', '{literal}'))))",
            parameters=span,
            settings={"max_query_size": len(literal) + 65536},
        )
        return {row[0] for row in result.result_rows}

    def _sign_replayed(self, batch: Mapping[str, list[Any]]) -> None:
        """Sign the chain's unsigned tail left by a shipper killed between a batch's insert and its checkpoint,
        when that batch is replayed from the spool: only if the tail is exactly events of this batch, stored
        with the hashes they chain to from the last checkpoint. The spool vouches for them; rows added to the
        table by anyone else stay unsigned, and verify names them."""
        if self.signer is None:
            return
        named = {"chain": self.chain}
        seq, head_hash = self.head()
        last, last_hash = self._one(
            f"SELECT max(seq), argMax(hash, seq) FROM {self.checkpoints} WHERE chain = {{chain:String}}", named
        )
        last, start = int(last or 0), str(last_hash) if last else genesis(self.chain)
        if seq <= last:
            return
        tail = self.client.query(
            f"SELECT seq, prev_hash, hash, toString(event_id) FROM {self.events} "
            f"WHERE chain = {{chain:String}} AND seq > {last} ORDER BY seq",
            parameters=named,
        ).result_rows
        at = {event_id: index for index, event_id in enumerate(batch["event_id"])}
        if len(tail) != seq - last or tail[0][1] != start or any(row[3] not in at for row in tail):
            return
        picked = [[values[at[row[3]]] for row in tail] for values in batch.values()]
        if hash_rows(start, picked) != [row[2] for row in tail]:
            return
        self._head, self._unsigned = (seq, head_hash), _Pending(seq, head_hash, len(tail))
        self._sign_pending()

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
        message = checkpoint_message(pending.seq, pending.hash, pending.rows, created, self.chain)
        signature = self.signer.sign(message)
        self.client.insert(
            self.checkpoints,
            [[pending.seq, pending.hash, pending.rows, created, self.signer.public_key_id, signature, self.chain]],
            column_names=CHECKPOINT_NAMES,
            settings=_WRITE_THROUGH,
        )
        self._unsigned = None

    def verify(self, start: datetime | None = None, end: datetime | None = None) -> VerifyResult:
        """Recompute every chain and check its checkpoints: all of it, or the stretch of seq holding [start, end)."""
        results = [(chain, self._verify_chain(chain, start, end)) for chain in self.chains()]
        failed = [(chain, result) for chain, result in results if not result.ok]
        rows, signed = sum(r.rows_checked for _, r in results), sum(r.checkpoints_checked for _, r in results)
        if failed:
            chain, first = failed[0]
            problem = f"chain {chain!r}: {first.first_problem}" if chain else first.first_problem
            return VerifyResult(False, rows, signed, problem, first.first_seq, first.last_seq, len(results))
        last = results[-1][1] if len(results) == 1 else VerifyResult(True, 0, 0, None)
        return VerifyResult(True, rows, signed, None, last.first_seq, last.last_seq, len(results))

    def chains(self) -> list[str]:
        """The chains in the store (rows or checkpoints), by name."""
        result = self.client.query(
            f"SELECT chain FROM {self.events} GROUP BY chain UNION DISTINCT "
            f"SELECT chain FROM {self.checkpoints} GROUP BY chain"
        )
        return sorted({str(row[0]) for row in result.result_rows})

    def _verify_chain(self, chain: str, start: datetime | None, end: datetime | None) -> VerifyResult:
        """One chain, whole or the stretch holding [start, end).

        For a time range the stretch runs from the row before the first one in range (so that deleting the first
        is seen) to the checkpoint closing the last one, and the chain is taken on trust at its start.
        """
        anchor: str | None = genesis(chain)
        if start is None and end is None:
            lo, hi = 1, None
        else:
            bounds = self._range(chain, start, end)
            if bounds is None:
                return VerifyResult(True, 0, 0, None)
            lo, hi = bounds
            anchor = genesis(chain) if lo == 1 else None
        rows = self._pages(EVENTS, ROW_COLUMNS, chain, lo, hi, "seq, event_id")
        columns = ", ".join(CHECKPOINT_NAMES)
        checkpoints = (Checkpoint(*row) for row in self._pages(CHECKPOINTS, columns, chain, lo, hi, "seq"))
        return walk(rows, checkpoints, lo, anchor, self.keys, self._expired_before_ms())

    def _range(self, chain: str, start: datetime | None, end: datetime | None) -> tuple[int, int | None] | None:
        where, parameters = time_filter("ts", start, end)
        where, parameters["chain"] = where + " AND chain = {chain:String}", chain
        found = self._one(f"SELECT count(), min(seq), max(seq) FROM {self.events} WHERE {where}", parameters)
        where, parameters = time_filter("created", start, end)
        where, parameters["chain"] = where + " AND chain = {chain:String}", chain
        signed = self._one(f"SELECT count(), min(seq), max(seq) FROM {self.checkpoints} WHERE {where}", parameters)
        spans = [(row[1], row[2]) for row in (found, signed) if row[0]]
        if not spans:
            return None
        lo, last = min(s[0] for s in spans), max(s[1] for s in spans)
        closing = self._one(
            f"SELECT count(), min(seq) FROM {self.checkpoints} WHERE chain = {{chain:String}} "
            "AND seq >= {last:UInt64}",
            {"last": last, "chain": chain},
        )
        return max(lo - 1, 1), (closing[1] if closing[0] else None)

    def _one(self, sql: str, parameters: Mapping[str, Any]) -> Sequence[Any]:
        return self.client.query(sql, parameters=dict(parameters)).result_rows[0]

    def _pages(
        self, table: str, columns: str, chain: str, lo: int, hi: int | None, order: str
    ) -> Iterator[Sequence[Any]]:
        """A chain's rows with lo <= seq <= hi in seq order, one query per PAGE_SEQS seqs.

        A page is read whole rather than streamed: rows and checkpoints are read in step, and neither chDB nor a
        server session takes a second query while a stream is open.
        """
        at, source, named = lo, f"{self.database}.{table}", {"chain": chain}
        while hi is None or at <= hi:
            top = at + PAGE_SEQS - 1 if hi is None else min(at + PAGE_SEQS - 1, hi)
            page = self.client.query(
                f"SELECT {columns} FROM {source} WHERE chain = {{chain:String}} AND seq BETWEEN {at} AND {top} "
                f"ORDER BY {order}",
                parameters=named,
            ).result_rows
            yield from page
            if not page:  # skip an empty stretch (a gap, or the end)
                after = self.client.query(
                    f"SELECT seq FROM {source} WHERE chain = {{chain:String}} AND seq > {top} ORDER BY seq LIMIT 1",
                    parameters=named,
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


def connect(
    dsn: str,
    database: str = "gateway",
    signer: Signer | None = None,
    public_keys: Iterable[bytes] = (),
    chain: str = "",
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
    return AuditStore(client, database, signer, public_keys, chain)


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
