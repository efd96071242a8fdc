"""The audit store on the embedded engine: migrations, idempotent chained inserts, verification, tampering.

chDB runs one engine per process, on one data directory at a time: the module shares one client (closed at
the end, so that other modules may open theirs) and every test gets a database of its own.
"""

import itertools
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest

from gateway.audit import rows, schema
from gateway.audit import store as store_module
from gateway.audit.chain import GENESIS, Signer, checkpoint_message, row_hash, verify_signature
from gateway.audit.schema import ALL_NAMES, CHECKPOINT_NAMES
from gateway.audit.store import AuditStore, StoreLocked, connect

ROOT = Path(__file__).resolve().parents[3]
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    client = clickhouse_connect.get_client(dsn=f"chdb://{tmp_path_factory.mktemp('chdb')}")
    yield client
    client.close()


@pytest.fixture(scope="module")
def databases() -> Iterator[str]:
    return (f"t{n}" for n in itertools.count())


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> Signer:
    return Signer.load_or_create(tmp_path_factory.mktemp("keys") / "audit.key")


@pytest.fixture
def store(engine: Any, databases: Iterator[str], signer: Signer) -> AuditStore:
    audit = AuditStore(engine, next(databases), signer)
    audit.migrate()
    return audit


def event(n: int, team: str = "payments", ts: datetime | None = None, **fields: Any) -> dict[str, Any]:
    start = ts or NOW - timedelta(minutes=60 - n)
    return {
        "event_id": str(uuid.uuid4()),
        "ts": start.isoformat(timespec="milliseconds"),
        "ended": (start + timedelta(milliseconds=840)).isoformat(timespec="milliseconds"),
        "request_id": f"req-{n}",
        "key_id": f"key{n % 3}",
        "key_name": "checkout",
        "team": team,
        "route": "chat/completions",
        "model_requested": "gpt-4o-mini",
        "model_served": "gpt-4o-mini-2024-07-18",
        "provider": "openai",
        "attempts": 1,
        "status": 200,
        "stream": n % 2 == 0,
        "policy_revision": "rev-7",
        "decisions": [
            {"policy": "base", "rule": "models", "kind": "model", "action": "allow", "where": "input", "detail": ""},
            {"policy": "pii", "rule": "email", "kind": "pattern", "action": "redact", "where": "input", "detail": "x"},
        ],
        "pii": [],
        "tokens_in": 100 + n,
        "tokens_out": 20,
        "cost_micro_usd": 1500,
        "latency_ms": 840.25,
        "upstream_ms": 812.5,
        "ttft_ms": None,
        "client_ip": "10.1.2.3",
        "user_agent": "OpenAI/Python 1.54",
        "prompt_hash": "ab" * 32,
        "answer_hash": "cd" * 32,
        "body": "",
        **fields,
    }


def events(count: int, first: int = 0, **fields: Any) -> list[dict[str, Any]]:
    return [event(n, **fields) for n in range(first, first + count)]


def rows_of(audit: AuditStore, where: str = "1") -> list[dict[str, Any]]:
    sql = f"SELECT {', '.join(ALL_NAMES)} FROM {audit.events} WHERE {where} ORDER BY seq"
    return list(audit.client.query(sql).named_results())


def mutate(audit: AuditStore, sql: str) -> None:
    audit.client.command(sql.format(table=audit.events), settings={"mutations_sync": 2})


def forged(audit: AuditStore, seq: int, prev_hash: str, **fields: Any) -> None:
    """A row written behind the store's back, with a correctly computed hash."""
    row = {**rows.to_row(event(99, **fields)), "seq": seq, "prev_hash": prev_hash, "chain": audit.chain}
    row["hash"] = row_hash(prev_hash, row)
    audit.client.insert(audit.events, [[row[name] for name in ALL_NAMES]], column_names=ALL_NAMES)


# migrations


def test_migrations_are_applied_once_and_recorded_once(store: AuditStore) -> None:
    assert store.migrate() == []
    assert store.migrate(retention_days=400) == []
    recorded = store.client.query(f"SELECT version, description FROM {store.database}.schema_migrations").result_rows
    assert sorted(version for version, _ in recorded) == [version for version, _, _ in schema.MIGRATIONS]


def test_a_fresh_database_gets_every_migration(engine: Any, databases: Iterator[str]) -> None:
    assert schema.migrate(engine, next(databases)) == [1, 2, 3, 4]


def test_changing_the_retention_modifies_the_ttl_of_both_tables(store: AuditStore) -> None:
    assert schema.table_retention(store.client, store.database, "audit_events") == 400
    store.migrate(retention_days=30)
    for table in ("audit_events", "audit_checkpoints"):
        assert schema.table_retention(store.client, store.database, table) == 30
    assert not schema.set_retention(store.client, store.database, "audit_events", 30)  # unchanged: no ALTER


def test_every_column_is_documented_in_the_module_docstring_and_the_table(store: AuditStore) -> None:
    described = store.client.query(f"DESCRIBE TABLE {store.events}").named_results()
    comments = {row["name"]: row["comment"] for row in described}
    assert set(comments) == set(ALL_NAMES)
    assert all(comments[name] for name in ALL_NAMES)
    documented = schema.__doc__ or ""
    assert all(f"\n    {name} " in documented or f"`{name}`" in documented for name in ALL_NAMES)


def test_the_cluster_ddl_in_deploy_is_generated_from_the_schema() -> None:
    assert (ROOT / "deploy/clickhouse/cluster.sql").read_text() == schema.cluster_sql()


# inserts and verification


def test_inserted_batches_form_a_chain_that_verifies(store: AuditStore) -> None:
    assert store.head() == (0, GENESIS)
    for first in (0, 10, 20):
        assert store.insert(events(10, first)) == 10
    assert store.head()[0] == 30
    result = store.verify()
    assert result.ok, result.first_problem
    assert (result.rows_checked, result.checkpoints_checked, result.first_seq, result.last_seq) == (30, 3, 1, 30)


def test_a_replayed_batch_inserts_no_duplicate_and_the_chain_still_verifies(store: AuditStore) -> None:
    batch = events(20)
    assert store.insert(batch) == 20
    assert store.insert(batch) == 0
    restarted = AuditStore(store.client, store.database, store.signer)  # a replay after a crash: a new process
    assert restarted.insert(batch[10:] + events(5, 20)) == 5
    counts = store.client.query(f"SELECT count(), uniqExact(event_id), max(seq) FROM {store.events}").result_rows
    assert counts == [(25, 25, 25)]
    assert store.verify().ok


def test_an_event_repeated_within_a_batch_is_stored_once(store: AuditStore) -> None:
    one = event(1)
    assert store.insert([one, dict(one), event(2)]) == 2


def test_a_row_read_back_hashes_as_it_was_written(store: AuditStore) -> None:
    awkward = event(
        1,
        ts=datetime(2026, 3, 1, 14, 0, 0, 123456, tzinfo=UTC),
        ended="2026-03-01T16:00:01.9999+02:00",
        latency_ms=7,
        upstream_ms=0.1 + 0.2,
        ttft_ms=123.456789,
        end_user='Zoë 🚀 "quoted" \\ back',
        pii=[{"entity": "EMAIL_ADDRESS", "count": 2, "action": "mask"}],
        client_disconnected=True,
        body="line\nbreak",
    )
    store.insert([awkward])
    written = rows.to_row(awkward)
    [stored] = rows_of(store)
    assert stored["hash"] == row_hash(GENESIS, written) == row_hash(stored["prev_hash"], stored)
    assert stored["ts"] == datetime(2026, 3, 1, 14, 0, 0, 123000)  # cut to the ms, naive UTC
    assert stored["ended"] == datetime(2026, 3, 1, 14, 0, 1, 999000)


def test_events_of_another_version_are_stored_with_defaults(store: AuditStore) -> None:
    old = {"event_id": str(uuid.uuid4()), "ts": NOW.isoformat(), "team": "ops", "status": "200", "extra": [1]}
    odd = {**event(2), "attempts": -3, "tokens_in": 2**40, "latency_ms": float("nan"), "decisions": "none"}
    no_id = {"ts": NOW.isoformat(), "team": "legacy"}
    assert store.insert([old, odd, no_id]) == 3
    assert store.insert([no_id]) == 0  # an event without an id gets a stable one: its replay is recognised
    rows = {row["team"]: row for row in rows_of(store, "team = 'ops'")}
    assert rows["ops"]["model_requested"] == "" and rows["ops"]["ttft_ms"] is None
    assert rows["ops"]["ended"] == rows["ops"]["ts"]
    [clamped] = rows_of(store, "team = 'payments'")
    assert (clamped["attempts"], clamped["tokens_in"], clamped["latency_ms"]) == (0, 2**32 - 1, 0.0)
    assert clamped["decisions"] == []
    assert store.verify().ok


def test_verify_reads_the_chain_page_by_page(store: AuditStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "PAGE_SEQS", 4)
    store.insert(events(9))
    store.insert(events(9, 9))
    result = store.verify()
    assert result.ok and result.rows_checked == 18 and result.checkpoints_checked == 2


def test_a_time_range_is_verified_from_the_row_before_it(store: AuditStore) -> None:
    for first in range(0, 40, 10):
        store.insert(events(10, first))
    start, end = NOW - timedelta(minutes=45), NOW - timedelta(minutes=35)  # events 15..24
    result = store.verify(start, end)
    assert result.ok, result.first_problem
    assert result.first_seq == 15 and result.last_seq == 30  # the row before, to the batch's checkpoint
    assert store.verify(NOW + timedelta(days=1), None) == store_module.VerifyResult(True, 0, 0, None)
    mutate(store, "ALTER TABLE {table} DELETE WHERE seq = 16")  # the first row in range
    result = store.verify(start, end)
    assert not result.ok and "seq 16 missing before row seq 17" in str(result.first_problem)


def test_rows_dropped_by_retention_are_not_taken_for_deleted_ones(store: AuditStore) -> None:
    store.migrate(retention_days=30)
    store.insert([event(n, ts=NOW - timedelta(days=31, minutes=-n)) for n in range(5)])  # last month's
    store.insert([event(n, ts=NOW - timedelta(days=29, hours=12, minutes=-n)) for n in range(5, 10)])
    store.client.command(f"OPTIMIZE TABLE {store.events} FINAL")  # the TTL drops the expired part
    result = store.verify()
    assert result.ok, result.first_problem
    assert (result.first_seq, result.rows_checked) == (6, 5)


def test_rows_deleted_at_the_start_of_a_young_chain_are_reported(store: AuditStore) -> None:
    store.insert(events(5))
    mutate(store, "ALTER TABLE {table} DELETE WHERE seq <= 2")
    result = store.verify()
    assert not result.ok and str(result.first_problem).startswith("seq 1..2 missing before row seq 3")


def test_signing_can_be_checked_without_the_private_key(store: AuditStore, signer: Signer) -> None:
    store.insert(events(3))
    auditor = AuditStore(store.client, store.database, public_keys=[signer.public_pem])
    assert auditor.verify().checkpoints_checked == 1
    blind = AuditStore(store.client, store.database).verify()
    assert not blind.ok and "not a trusted public key" in str(blind.first_problem)


def test_a_batch_whose_checkpoint_failed_is_signed_with_the_next_insert(store: AuditStore) -> None:
    class FailingOnce:
        """The client, failing the first checkpoint insert as a dropped connection would."""

        def __init__(self, client: Any) -> None:
            self.client, self.failed = client, False

        def __getattr__(self, name: str) -> Any:
            return getattr(self.client, name)

        def insert(self, table: str, *args: Any, **kwargs: Any) -> Any:
            if table.endswith("audit_checkpoints") and not self.failed:
                self.failed = True
                raise ConnectionError("connection reset")
            return self.client.insert(table, *args, **kwargs)

    flaky = AuditStore(FailingOnce(store.client), store.database, store.signer)
    with pytest.raises(ConnectionError):
        flaky.insert(events(4))
    assert flaky.insert(events(4, 4)) == 4
    result = store.verify()
    assert result.ok and result.checkpoints_checked == 2, result.first_problem


# tampering


def test_an_updated_column_is_reported_naming_the_row(store: AuditStore) -> None:
    store.insert(events(10))
    [victim] = rows_of(store, "seq = 6")
    mutate(store, "ALTER TABLE {table} UPDATE tokens_out = 1 WHERE seq = 6")
    result = store.verify()
    assert not result.ok and result.rows_checked == 5
    assert result.first_problem == (
        f"row seq 6 (event_id {victim['event_id']}) was altered: its columns do not hash to its stored hash"
    )


@pytest.mark.parametrize("delete", ["ALTER TABLE {table} DELETE WHERE seq = 4", "DELETE FROM {table} WHERE seq = 4"])
def test_a_deleted_row_is_reported_as_a_gap(store: AuditStore, delete: str) -> None:
    store.insert(events(10))
    [after] = rows_of(store, "seq = 5")
    mutate(store, delete)
    result = store.verify()
    assert not result.ok
    assert result.first_problem == f"seq 4 missing before row seq 5 (event_id {after['event_id']}): rows were deleted"


def test_deleting_the_last_rows_is_reported_by_their_checkpoint(store: AuditStore) -> None:
    store.insert(events(10))
    mutate(store, "ALTER TABLE {table} DELETE WHERE seq >= 9")
    result = store.verify()
    assert not result.ok and result.first_problem is not None
    assert result.first_problem.startswith("checkpoint at seq 10 names a row that is not there")


def test_a_row_forged_in_the_middle_is_reported(store: AuditStore) -> None:
    store.insert(events(10))
    [before, real] = rows_of(store, "seq IN (4, 5)")
    forged(store, 5, before["hash"])
    result = store.verify()
    assert not result.ok and result.first_problem is not None
    assert result.first_problem.startswith("seq 5 is held by 2 rows")
    assert str(real["event_id"]) in result.first_problem


def test_a_row_forged_after_the_head_is_reported_even_once_chained_into(store: AuditStore) -> None:
    store.insert(events(10))
    seq, head = store.head()
    forged(store, seq + 1, head)
    [fake] = rows_of(store, "seq = 11")
    problem = f"row seq 11 (event_id {fake['event_id']}) is not covered by any signed checkpoint"
    assert str(store.verify().first_problem).startswith(problem)
    restarted = AuditStore(store.client, store.database, store.signer)  # reads the forged head
    restarted.insert(events(5, 10))
    assert str(store.verify().first_problem).startswith(problem)


def test_a_forged_checkpoint_is_reported(store: AuditStore, tmp_path: Path) -> None:
    store.insert(events(10))
    seq, head = store.head()
    intruder = Signer.load_or_create(tmp_path / "intruder.key")
    created = datetime.now(UTC)

    def checkpoint(key_id: str, signature: str, rows: int = 10) -> None:
        row = [seq, head, rows, created, key_id, signature, store.chain]
        store.client.insert(store.checkpoints, [row], column_names=CHECKPOINT_NAMES)

    checkpoint(intruder.public_key_id, intruder.sign(checkpoint_message(seq, head, 10, created)))
    assert "not a trusted public key" in str(store.verify().first_problem)
    store.client.command(f"TRUNCATE TABLE {store.checkpoints}")
    checkpoint(store.signer.public_key_id, store.signer.sign(checkpoint_message(seq, head, 10, created)), rows=11)
    result = store.verify()
    assert (
        not result.ok
        and result.first_problem == f"checkpoint at seq {seq} has a bad signature: it was forged or altered"
    )


# operator reads


def test_query_filters_by_team_key_model_status_and_time(store: AuditStore) -> None:
    store.insert(events(6) + events(3, 6, team="search", status=429, model_requested="claude", model_served="claude-3"))
    assert len(store.query()) == 9
    assert [e["team"] for e in store.query(team="search")] == ["search"] * 3
    assert {e["key_id"] for e in store.query(key_id="key1")} == {"key1"}
    assert len(store.query(model="claude")) == 3 and len(store.query(model="gpt-4o-mini-2024-07-18")) == 6
    assert len(store.query(status=429)) == 3
    newest = store.query(start=NOW - timedelta(minutes=56), limit=2)
    assert [e["request_id"] for e in newest] == ["req-8", "req-7"]
    assert len(store.query(team="search", status=200)) == 0
    found = store.query(end=NOW - timedelta(minutes=59))[0]
    assert found["request_id"] == "req-0" and found["decisions"][1]["action"] == "redact"
    assert found["ts"].endswith("Z") and found["seq"] == 1


def test_tail_returns_the_last_rows_written_oldest_first(store: AuditStore) -> None:
    store.insert(events(5))
    assert [e["seq"] for e in store.tail(3)] == [3, 4, 5]
    assert [e["request_id"] for e in store.tail(2)] == ["req-3", "req-4"]


# signing key and the embedded engine's lock


def test_the_signing_key_is_created_private_and_loaded_again(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "audit.key"
    first = Signer.load_or_create(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.with_suffix(".pub").read_bytes() == first.public_pem
    again = Signer.load_or_create(path)
    assert again.public_key_id == first.public_key_id
    signature = again.sign("message")
    assert verify_signature(first.public_pem, "message", signature)
    assert not verify_signature(first.public_pem, "messagE", signature)
    assert not verify_signature(first.public_pem, "message", "00" * 64)
    assert not verify_signature(first.public_pem, "message", "not hex")


def test_connect_says_when_another_process_holds_the_embedded_engine(tmp_path: Path) -> None:
    directory = tmp_path / "held"
    hold = f"import clickhouse_connect, time; c = clickhouse_connect.get_client(dsn='chdb://{directory}'); print(1)"
    command = [sys.executable, "-c", hold + "; import sys; sys.stdout.flush(); time.sleep(60)"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "1\n"
            with pytest.raises(StoreLocked, match="locked by another process"):
                connect(f"chdb://{directory}")
        finally:
            holder.kill()


def test_events_are_inserted_as_fast_as_a_gateway_makes_them(store: AuditStore) -> None:
    batch = events(2000)
    started = time.perf_counter()
    store.insert(batch)
    assert time.perf_counter() - started < 2.0  # about 0.15 s on one core: a generous bound for busy CI


# one chain per shipper


def test_replicas_sharing_a_database_each_write_their_own_chain(
    engine: Any, databases: Iterator[str], tmp_path: Path
) -> None:
    database = next(databases)
    keys = [Signer.load_or_create(tmp_path / f"{name}.key") for name in "ab"]
    pems = [key.public_pem for key in keys]
    first, second = (AuditStore(engine, database, key, pems, chain=name) for key, name in zip(keys, "ab", strict=True))
    first.migrate()
    for n in range(3):  # interleaved batches, as two replicas' shippers would write them
        first.insert(events(4, first=10 * n))
        second.insert(events(3, first=10 * n + 5))
    assert [first.head()[0], second.head()[0]] == [12, 9]
    result = AuditStore(engine, database, public_keys=pems).verify()
    assert result.ok and result.rows_checked == 21 and result.checkpoints_checked == 6 and result.chains == 2
    assert sorted(first.chains()) == ["a", "b"]


def test_a_row_moved_to_another_chain_is_named(engine: Any, databases: Iterator[str], signer: Signer) -> None:
    database = next(databases)
    first, second = (AuditStore(engine, database, signer, chain=name) for name in "ab")
    first.migrate()
    first.insert(events(3))
    second.insert(events(3, first=5))
    mutate(first, "ALTER TABLE {table} UPDATE chain = 'b', seq = 4 WHERE chain = 'a' AND seq = 3")
    result = AuditStore(engine, database, public_keys=[signer.public_pem]).verify()
    assert not result.ok and result.first_problem is not None
    assert result.first_problem.startswith("chain 'a': checkpoint at seq 3 names a row that is not there")


def test_a_checkpoint_signed_for_one_chain_does_not_vouch_for_another() -> None:
    created = datetime(2026, 11, 24, tzinfo=UTC)
    assert checkpoint_message(5, "ab" * 32, 5, created, "a") != checkpoint_message(5, "ab" * 32, 5, created, "b")
    assert checkpoint_message(5, "ab" * 32, 5, created) == checkpoint_message(5, "ab" * 32, 5, created, "")


# a shipper killed between a batch's insert and its checkpoint


def test_a_batch_replayed_after_a_crash_before_its_checkpoint_gets_signed(
    engine: Any, databases: Iterator[str], signer: Signer
) -> None:
    database = next(databases)
    store = AuditStore(engine, database, signer, chain="a")
    store.migrate()
    store.insert(events(4))
    batch = events(3, first=10)
    store.insert(batch)
    seq, _ = store.head()
    engine.command(  # the shipper was killed after the insert, before this checkpoint landed
        f"ALTER TABLE {database}.audit_checkpoints DELETE WHERE seq = {seq}", settings={"mutations_sync": 2}
    )
    assert "not covered by any signed checkpoint" in str(store.verify().first_problem)
    restarted = AuditStore(engine, database, signer, chain="a")
    assert restarted.insert(batch) == 0  # the spool's replay of that batch inserts nothing, and signs it
    result = restarted.verify()
    assert result.ok and result.rows_checked == 7 and result.checkpoints_checked == 2


def test_a_row_added_behind_the_stores_back_is_not_signed_by_a_replay(
    engine: Any, databases: Iterator[str], signer: Signer
) -> None:
    database = next(databases)
    store = AuditStore(engine, database, signer, chain="a")
    store.migrate()
    batch = events(3)
    store.insert(batch)
    engine.command(f"TRUNCATE TABLE {database}.audit_checkpoints")  # killed before its checkpoint
    seq, head = store.head()
    forged(store, seq + 1, head)  # and someone appends a row of their own meanwhile
    restarted = AuditStore(engine, database, signer, chain="a")
    assert restarted.insert(batch) == 0
    result = restarted.verify()
    assert not result.ok and "not covered by any signed checkpoint" in str(result.first_problem)
