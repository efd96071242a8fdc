"""The shipper's path into the store, a batch at a time: decoding, normalising column by column, hashing the
chain from canonical bytes, the duplicate check, and verification reading the same bytes back.

chDB runs one engine per process, on one data directory at a time: the module shares one client (closed at
the end, so that other modules may open theirs) and every test gets a database of its own.
"""

import gc
import itertools
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import codec
from gateway.audit import rows
from gateway.audit.canonical import canonical, canonical_rows
from gateway.audit.chain import GENESIS, Signer, hash_rows, hash_values, walk
from gateway.audit.schema import ALL_NAMES, EVENT_NAMES
from gateway.audit.shipper import Shipper
from gateway.audit.store import AuditStore

NOW = datetime.now(UTC).replace(microsecond=0)

# An event whose canonical bytes and chain hash were computed by the row-by-row implementation this batch path
# replaced: rows already stored under that one must keep verifying.
PINNED_EVENT = {
    "event_id": "7d9f3c1e-2b4a-4c8e-9f10-3a5b6c7d8e9f",
    "ts": "2026-03-01T14:00:00.123456+00:00",
    "ended": "2026-03-01T16:00:01.9999+02:00",
    "request_id": "req-1",
    "key_id": "k1",
    "team": "payments",
    "end_user": 'Zoë 🚀 "quoted" \\ back',
    "route": "chat/completions",
    "attempts": 2,
    "status": 200,
    "stream": True,
    "client_disconnected": False,
    "decisions": [
        {"policy": "base", "rule": "models", "kind": "model", "action": "allow", "where": "input", "detail": ""}
    ],
    "pii": [{"entity": "EMAIL_ADDRESS", "count": 2, "action": "mask"}],
    "tokens_in": 100,
    "cost_micro_usd": 1500,
    "latency_ms": 840.25,
    "upstream_ms": 0.1 + 0.2,
    "ttft_ms": 0.0,
    "body": "line\nbreak",
}
PINNED_CANONICAL = (
    b'{"attempts":2,"body":"line\\nbreak","cost_micro_usd":1500,"decisions":[["base","models","model","allow",'
    b'"input",""]],"end_user":"Zo\xc3\xab \xf0\x9f\x9a\x80 \\"quoted\\" \\\\ back","ended":1772373601999,'
    b'"event_id":"7d9f3c1e-2b4a-4c8e-9f10-3a5b6c7d8e9f","key_id":"k1","latency_ms":840.25,"pii":[["EMAIL_ADDRESS",'
    b'2,"mask"]],"request_id":"req-1","route":"chat/completions","status":200,"stream":true,"team":"payments",'
    b'"tokens_in":100,"ts":1772373600123,"ttft_ms":0.0,"upstream_ms":0.30000000000000004}'
)
PINNED_HASH = "3673155ffe5eeae2c7ddaaf6d40d712d8ed8c0a0472c7ee7cd5a0abd2043e6d0"


def event(n: int, team: str = "payments", ts: datetime | None = None, **fields: Any) -> dict[str, Any]:
    start = ts or NOW - timedelta(minutes=60 - n % 60)
    return {
        "event_id": str(uuid.uuid4()),
        "ts": start.isoformat(timespec="milliseconds"),
        "ended": (start + timedelta(milliseconds=840)).isoformat(timespec="milliseconds"),
        "request_id": f"req-{n}",
        "key_id": f"key{n % 3}",
        "team": team,
        "route": "chat/completions",
        "model_requested": "gpt-4o-mini",
        "attempts": 1,
        "status": 200,
        "stream": n % 2 == 0,
        "decisions": [
            {"policy": "base", "rule": "models", "kind": "model", "action": "allow", "where": "input", "detail": ""},
        ],
        "pii": [],
        "tokens_in": 100 + n,
        "latency_ms": 840.25,
        "ttft_ms": None if n % 3 else 12.5,
        "body": "",
        **fields,
    }


ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(
        [
            "",
            -0.0,
            "2026-03-01T16:00:01.9999+02:00",
            "2026-03-01T16:00:01",
            1_700_000_000.5,
            str(uuid.uuid4()).upper(),
            f"{{{uuid.uuid4()}}}",
            "ab\ncd",
            [],
            {},
            "none",
            [{"policy": "p", "rule": 1}],
            [{"entity": "EMAIL_ADDRESS", "count": "3", "action": "mask"}],
            [{"entity": "PHONE", "count": -1}],
            [1, {"policy": "a"}],
            [["a", "b"]],
        ]
    ),
)
ODD_FIELDS = st.dictionaries(st.sampled_from([n for n in EVENT_NAMES if n != "ts"]), ODD_VALUES, max_size=4)
BATCHES = st.lists(st.tuples(st.integers(0, 59), ODD_FIELDS), min_size=1, max_size=12)


def batch_of(drawn: list[tuple[int, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Ordinary events, each with the odd fields drawn for it (ts stays valid: without one a row is stamped now)."""
    return [{**event(n), **fields} for n, fields in drawn]


def as_written(values: list[Any]) -> list[str]:
    return [repr(value) for value in values]  # tells 0 from 0.0, False and -0.0


def test_the_canonical_form_of_a_row_is_the_one_stored_chains_were_hashed_with() -> None:
    columns = list(rows.to_columns([PINNED_EVENT]).values())
    assert canonical_rows(columns) == [PINNED_CANONICAL]
    assert hash_rows(GENESIS, columns) == [PINNED_HASH]
    one = rows.to_row(PINNED_EVENT)
    assert hash_values(GENESIS, [one[name] for name in EVENT_NAMES]) == PINNED_HASH


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(BATCHES)
def test_an_odd_event_in_a_batch_changes_nothing_about_the_others(drawn: list[tuple[int, dict[str, Any]]]) -> None:
    events = batch_of(drawn)
    batch = rows.to_columns(events)
    alone = [rows.to_columns([e]) for e in events]
    for name in EVENT_NAMES:
        assert as_written(batch[name]) == as_written([columns[name][0] for columns in alone]), name


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(BATCHES)
def test_a_batch_hashes_as_its_rows_chained_one_by_one(drawn: list[tuple[int, dict[str, Any]]]) -> None:
    events = batch_of(drawn)
    hashes, prev = [], GENESIS
    for e in events:
        row = rows.to_row(e)
        prev = hash_values(prev, [row[name] for name in EVENT_NAMES])
        hashes.append(prev)
    assert hash_rows(GENESIS, list(rows.to_columns(events).values())) == hashes


def test_values_read_back_encode_as_the_values_inserted() -> None:
    """clickhouse-connect gives UUIDs, naive UTC datetimes and named tuples as dicts; the store inserts text,
    epoch milliseconds and tuples."""
    inserted = rows.to_columns([PINNED_EVENT])
    read_back = dict(inserted)
    read_back["event_id"] = [uuid.UUID(inserted["event_id"][0])]
    read_back["ts"] = [datetime(2026, 3, 1, 14, 0, 0, 123000)]
    read_back["ended"] = [datetime(2026, 3, 1, 14, 0, 1, 999000)]
    read_back["decisions"] = [[dict(zip(("policy", "rule", "kind", "action", "where", "detail"), d, strict=True))
                               for d in inserted["decisions"][0]]]  # fmt: skip
    read_back["pii"] = [[{"entity": "EMAIL_ADDRESS", "count": 2, "action": "mask"}]]
    assert canonical([values[0] for values in read_back.values()]) == PINNED_CANONICAL


def test_an_unusable_id_or_time_gets_a_stable_id_and_the_other_time() -> None:
    no_id = {"ts": NOW.isoformat(), "team": "legacy"}
    columns = rows.to_columns([no_id, dict(no_id), {**no_id, "ts": "yesterday", "ended": NOW.isoformat()}])
    assert columns["event_id"][0] == columns["event_id"][1] != columns["event_id"][2]
    assert uuid.UUID(columns["event_id"][0]).version == 5
    assert columns["ts"] == columns["ended"] == [int(NOW.timestamp() * 1000)] * 3


def chained_rows(count: int) -> list[list[Any]]:
    """`count` rows as verify reads them: (seq, prev_hash, hash, *event values)."""
    columns = rows.to_columns([event(n) for n in range(count)])
    hashes = hash_rows(GENESIS, list(columns.values()))
    prevs = [GENESIS, *hashes[:-1]]
    values = zip(*columns.values(), strict=True)
    return [[seq, prev, h, *row] for seq, prev, h, row in zip(itertools.count(1), prevs, hashes, values)]


def test_verify_finds_an_altered_row_far_into_a_long_chain() -> None:
    chain = chained_rows(1000)
    assert walk(chain, [], 1, GENESIS, {}).ok
    chain[900][3 + EVENT_NAMES.index("tokens_in")] += 1
    result = walk(chain, [], 1, GENESIS, {})
    assert not result.ok and result.first_problem is not None
    assert result.first_problem.startswith("row seq 901 ") and "was altered" in result.first_problem


def test_verify_finds_a_seq_held_twice_wherever_it_is() -> None:
    chain = chained_rows(600)
    for at in (254, 255, 256, 599):  # inside a chunk of rows encoded together, and across chunks
        doubled = [*chain[: at + 1], chain[at], *chain[at + 1 :]]
        result = walk(doubled, [], 1, GENESIS, {})
        assert result.first_problem is not None and f"seq {at + 1} is held by 2 rows" in result.first_problem


# the store and the shipper, on the embedded engine


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    client = clickhouse_connect.get_client(dsn=f"chdb://{tmp_path_factory.mktemp('chdb')}")
    yield client
    client.close()


@pytest.fixture(scope="module")
def databases() -> Iterator[str]:
    return (f"p{n}" for n in itertools.count())


@pytest.fixture
def store(engine: Any, databases: Iterator[str], tmp_path: Path) -> AuditStore:
    audit = AuditStore(engine, next(databases), Signer.load_or_create(tmp_path / "audit.key"))
    audit.migrate()
    return audit


def stored(audit: AuditStore) -> list[dict[str, Any]]:
    sql = f"SELECT {', '.join(ALL_NAMES)} FROM {audit.events} ORDER BY seq"
    return list(audit.client.query(sql).named_results())


def test_a_replay_among_many_rows_of_the_same_moment_is_still_recognised(store: AuditStore) -> None:
    """A busy moment holds more rows than the store reads to compare: the ids are then looked up one by one."""
    moment = NOW - timedelta(minutes=5)
    crowd = [event(n, ts=moment) for n in range(1500)]
    assert store.insert(crowd) == 1500
    replay = crowd[700:800] + [event(n, ts=moment) for n in range(10)]
    assert store.insert(replay) == 10
    counts = store.client.query(f"SELECT count(), uniqExact(event_id) FROM {store.events}").result_rows
    assert counts == [(1510, 1510)]
    assert store.verify().ok


def test_a_batch_with_repeats_and_replays_keeps_the_first_of_each_new_event_in_order(store: AuditStore) -> None:
    old = [event(n) for n in range(3)]
    store.insert(old)
    new = [event(n, request_id=f"new-{n}") for n in range(4)]
    batch = [new[0], old[1], new[1], dict(new[0], request_id="again"), new[2], old[2], new[3], new[1]]
    assert store.insert(batch) == 4
    assert [row["request_id"] for row in stored(store)][3:] == ["new-0", "new-1", "new-2", "new-3"]
    assert store.verify().ok


def test_events_are_stored_with_the_values_they_were_hashed_with(store: AuditStore) -> None:
    odd = event(1, attempts=-3, tokens_in=2**40, latency_ms=-0.0, ttft_ms=7, stream="yes", decisions="none")
    store.insert([PINNED_EVENT, odd, event(2, pii=[{"entity": "PHONE", "count": 4, "action": "mask"}])])
    first, second, third = stored(store)
    assert first["hash"] == PINNED_HASH and str(first["event_id"]) == PINNED_EVENT["event_id"]
    assert first["ts"] == datetime(2026, 3, 1, 14, 0, 0, 123000) and first["ended"] == datetime(
        2026, 3, 1, 14, 0, 1, 999000
    )
    assert (second["attempts"], second["tokens_in"], second["ttft_ms"], second["stream"]) == (0, 2**32 - 1, 7.0, True)
    assert second["decisions"] == [] and third["pii"] == [{"entity": "PHONE", "count": 4, "action": "mask"}]
    assert store.verify().ok


def test_the_shipper_skips_and_counts_records_that_are_not_events(store: AuditStore, tmp_path: Path) -> None:
    good = [event(n) for n in range(3)]
    lines = [codec.dumps(good[0]), b"{not json", codec.dumps(good[1]), b"[1, 2]", codec.dumps(good[2])]
    directory = tmp_path / "spool"
    directory.mkdir()
    (directory / "w-000000000001.seg").write_bytes(b"\n".join(lines) + b"\n")
    thresholds = gc.get_threshold()
    stop = threading.Event()
    shipper = Shipper(lambda: store, directory, stop)
    thread = threading.Thread(target=shipper.run)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while shipper.shipped < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert shipper.bad_records == 2
    assert sorted(row["request_id"] for row in stored(store)) == ["req-0", "req-1", "req-2"]
    assert gc.get_threshold() == thresholds  # what the shipper changes while shipping, it puts back
