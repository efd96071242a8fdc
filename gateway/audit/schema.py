"""The audit tables: the one list of columns and numbered idempotent migrations (rows.py turns events into rows).

COLUMNS of `audit_events` (`EVENT_COLUMNS` below is the single source: the DDL, the cluster DDL, the
insert, the hash and the reads are all made from it; `tests/unit/audit` checks that this table names them all)

    column               type                        what it holds
    event_id             UUID                        the event's id, made by the gateway; the idempotency key
    ts                   DateTime64(3, 'UTC')        when the request started (ms)
    ended                DateTime64(3, 'UTC')        when the request ended (ms)
    request_id           String                      the x-request-id answered to the client
    key_id               LowCardinality(String)      the virtual key's id ("" if unauthenticated)
    key_name             LowCardinality(String)      the virtual key's name
    team                 LowCardinality(String)      the key's team
    end_user             String                      the body's `user` field, as sent by the client
    route                LowCardinality(String)      the API route (chat/completions, embeddings, ...)
    model_requested      LowCardinality(String)      the model named by the client
    model_served         LowCardinality(String)      the upstream model that answered
    provider             LowCardinality(String)      the upstream provider kind
    deployment           LowCardinality(String)      the deployment label that answered
    attempts             UInt8                       upstream attempts (retries and fallbacks included)
    status               UInt16                      the HTTP status the client got (0: none)
    error_type           LowCardinality(String)      the OpenAI error type, "" on success
    error_code           LowCardinality(String)      the OpenAI error code, "" on success
    stream               Bool                        a streamed answer
    client_disconnected  Bool                        the client went away before the end
    policy_revision      LowCardinality(String)      the policy set's revision that decided the request
    decisions            Array(Tuple(policy, rule,   what the policies matched and did, one per match
                           kind, action, where,
                           detail))
    pii                  Array(Tuple(entity, count,  PII found, by entity type: count and action taken
                           action))
    tokens_in            UInt32                      prompt tokens (from the upstream's usage)
    tokens_out           UInt32                      completion tokens
    cost_micro_usd       UInt64                      cost in millionths of a US dollar
    latency_ms           Float64                     total time in the gateway
    upstream_ms          Float64                     time waiting for the upstream
    ttft_ms              Nullable(Float64)           time to the first token of a stream; NULL if none
    client_ip            String                      the client's address
    user_agent           LowCardinality(String)      the client's User-Agent
    prompt_hash          String                      keyed hash (hex) of the request body, "" if none
    answer_hash          String                      keyed hash (hex) of the answer, "" if none
    body                 String                      with audit.bodies: the redacted request and answer, AES-GCM
                                                     sealed with the team's key (gateway.audit.bodies); else ""

and the chain columns, set by the store: `seq` (UInt64, position in the chain from 1), `prev_hash` and `hash`
(hex SHA-256, see gateway.audit.chain), and `chain`: each shipper writes its own chain (`audit.chain_id`,
by default the host name), so gateway replicas sharing one ClickHouse never fork a chain.

Layout of `audit_events`: a plain MergeTree (a ReplacingMergeTree would collapse rows behind the chain's back;
inserts are made idempotent by the store instead), PARTITION BY toYYYYMM(ts) so retention drops whole months,
ORDER BY (team, ts): the reports ask "this team, this period" (spend, blocks, errors per team and month), which
then reads one contiguous range per part; a period across all teams still prunes well because `team` has few
values. Skip indexes: bloom filters on event_id and request_id (looking one request up) and minmax on seq
(verification and the chain head read by seq range).

Migrations are numbered, applied in order, each idempotent (CREATE ... IF NOT EXISTS, ADD COLUMN IF NOT
EXISTS) and recorded in `schema_migrations`; a new column goes at the end of EVENT_COLUMNS *and* gets its own
`ALTER TABLE ... ADD COLUMN IF NOT EXISTS` migration (the CREATE of a fresh install already has it). Retention
is not a migration: `migrate` compares the tables' TTL with `retention_days` at every start and runs
`ALTER TABLE ... MODIFY TTL` only when it differs (it rewrites TTL data of every part, so not needlessly).

`python -m gateway.audit.schema > deploy/clickhouse/cluster.sql` writes the cluster variant of the tables.
"""

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

EVENTS = "audit_events"
CHECKPOINTS = "audit_checkpoints"
MIGRATIONS_TABLE = "schema_migrations"
DEFAULT_RETENTION_DAYS = 400


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    kind: str  # how a value is normalised and hashed: uuid, time, str, int, bool, float, nullable_float, list
    comment: str
    fields: tuple[str, ...] = ()  # the tuple fields of a list column
    max: int = 0  # the largest value of an int column


DECISION_FIELDS = ("policy", "rule", "kind", "action", "where", "detail")
PII_FIELDS = ("entity", "count", "action")
_LC = "LowCardinality(String)"
_DECISION_TYPE = f"Array(Tuple(policy {_LC}, rule {_LC}, kind {_LC}, action {_LC}, `where` {_LC}, detail String))"
_PII_TYPE = f"Array(Tuple(entity {_LC}, count UInt32, action {_LC}))"

EVENT_COLUMNS: tuple[Column, ...] = (
    Column("event_id", "UUID", "uuid", "the event's id, made by the gateway; the idempotency key"),
    Column("ts", "DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1))", "time", "when the request started (ms)"),
    Column("ended", "DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1))", "time", "when the request ended (ms)"),
    Column("request_id", "String", "str", "the x-request-id answered to the client"),
    Column("key_id", _LC, "str", "the virtual key's id, empty if unauthenticated"),
    Column("key_name", _LC, "str", "the virtual key's name"),
    Column("team", _LC, "str", "the key's team"),
    Column("end_user", "String", "str", "the body's user field, as sent by the client"),
    Column("route", _LC, "str", "the API route"),
    Column("model_requested", _LC, "str", "the model named by the client"),
    Column("model_served", _LC, "str", "the upstream model that answered"),
    Column("provider", _LC, "str", "the upstream provider kind"),
    Column("deployment", _LC, "str", "the deployment label that answered"),
    Column("attempts", "UInt8", "int", "upstream attempts, retries and fallbacks included", max=2**8 - 1),
    Column("status", "UInt16", "int", "the HTTP status the client got, 0 if none", max=2**16 - 1),
    Column("error_type", _LC, "str", "the OpenAI error type, empty on success"),
    Column("error_code", _LC, "str", "the OpenAI error code, empty on success"),
    Column("stream", "Bool", "bool", "a streamed answer"),
    Column("client_disconnected", "Bool", "bool", "the client went away before the end"),
    Column("policy_revision", _LC, "str", "the revision of the policy set that decided the request"),
    Column("decisions", _DECISION_TYPE, "list", "what the policies matched and did", DECISION_FIELDS),
    Column("pii", _PII_TYPE, "list", "PII found by entity type: count and action taken", PII_FIELDS),
    Column("tokens_in", "UInt32", "int", "prompt tokens, from the upstream usage", max=2**32 - 1),
    Column("tokens_out", "UInt32", "int", "completion tokens, from the upstream usage", max=2**32 - 1),
    Column("cost_micro_usd", "UInt64", "int", "cost in millionths of a US dollar", max=2**64 - 1),
    Column("latency_ms", "Float64", "float", "total time in the gateway, ms"),
    Column("upstream_ms", "Float64", "float", "time waiting for the upstream, ms"),
    Column("ttft_ms", "Nullable(Float64)", "nullable_float", "time to the first streamed token, ms; NULL if none"),
    Column("client_ip", "String", "str", "the client address"),
    Column("user_agent", _LC, "str", "the client User-Agent"),
    Column("prompt_hash", "String", "str", "keyed hash (hex) of the request body, empty if none"),
    Column("answer_hash", "String", "str", "keyed hash (hex) of the answer, empty if none"),
    Column("body", "String CODEC(ZSTD(3))", "str", "the redacted bodies sealed with the team key, or empty"),
)
CHAIN_COLUMNS: tuple[Column, ...] = (
    Column("seq", "UInt64", "int", "position in the hash chain, from 1", max=2**64 - 1),
    Column("prev_hash", "String", "str", "hash of the row at seq - 1 (64 zeros before the first)"),
    Column("hash", "String", "str", "SHA-256 hex of prev_hash and the canonical event columns"),
    Column("chain", _LC, "str", "the hash chain of the row: one per shipper (audit.chain_id), each from seq 1"),
)
EVENT_NAMES = tuple(c.name for c in EVENT_COLUMNS)
ALL_NAMES = (*EVENT_NAMES, *(c.name for c in CHAIN_COLUMNS))

_EVENT_INDEXES = (
    "INDEX event_id_bf event_id TYPE bloom_filter(0.01) GRANULARITY 4",
    "INDEX request_id_bf request_id TYPE bloom_filter(0.01) GRANULARITY 4",
    "INDEX seq_mm seq TYPE minmax GRANULARITY 1",
)
CHECKPOINT_COLUMNS: tuple[Column, ...] = (
    Column("seq", "UInt64", "int", "the last seq this checkpoint covers"),
    Column("hash", "String", "str", "the chain hash at seq"),
    Column("rows", "UInt64", "int", "rows covered: seq - rows + 1 .. seq, the batch it closes"),
    Column("created", "DateTime64(3, 'UTC')", "time", "when it was signed"),
    Column("key_id", _LC, "str", "fingerprint of the public key that signs it"),
    Column("signature", "String", "str", "hex Ed25519 signature of the canonical checkpoint message"),
    Column("chain", _LC, "str", "the hash chain it signs"),
)
CHECKPOINT_NAMES = tuple(c.name for c in CHECKPOINT_COLUMNS)


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _columns_ddl(columns: tuple[Column, ...], extra: tuple[str, ...] = ()) -> str:
    lines = [f"    {c.name} {c.type} COMMENT {_quote(c.comment)}" for c in columns] + [f"    {e}" for e in extra]
    return ",\n".join(lines)


def events_ddl(table: str, engine: str, on_cluster: str = "") -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {table}{on_cluster} (\n"
        f"{_columns_ddl(EVENT_COLUMNS + CHAIN_COLUMNS, _EVENT_INDEXES)}\n)\n"
        f"ENGINE = {engine}\nPARTITION BY toYYYYMM(ts)\nORDER BY (team, ts)\n"
        "SETTINGS ttl_only_drop_parts = 1"
    )


def checkpoints_ddl(table: str, engine: str, on_cluster: str = "") -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {table}{on_cluster} (\n{_columns_ddl(CHECKPOINT_COLUMNS)}\n)\n"
        f"ENGINE = {engine}\nPARTITION BY toYYYYMM(created)\nORDER BY seq\nSETTINGS ttl_only_drop_parts = 1"
    )


# (number, description, SQL with a {db} placeholder): one statement each, never edited once released
MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (1, "audit events with the hash chain columns", events_ddl("{db}." + EVENTS, "MergeTree")),
    (2, "signed checkpoints of the hash chain", checkpoints_ddl("{db}." + CHECKPOINTS, "MergeTree")),
    (3, "one hash chain per shipper", f"ALTER TABLE {{db}}.{EVENTS} ADD COLUMN IF NOT EXISTS chain {_LC} AFTER hash"),
    (4, "checkpoints name their chain", f"ALTER TABLE {{db}}.{CHECKPOINTS} ADD COLUMN IF NOT EXISTS chain {_LC}"),
)
_TTL_COLUMN = {EVENTS: "ts", CHECKPOINTS: "created"}
_TTL_DAYS = re.compile(r"\bTTL\b.*?toIntervalDay\((\d+)\)")


def migrate(client: Any, database: str = "gateway", retention_days: int = DEFAULT_RETENTION_DAYS) -> list[int]:
    """Create what is missing, set the retention; return the migration versions applied now."""
    check_database(database)
    if retention_days < 1:
        raise ValueError(f"retention_days must be at least 1, not {retention_days}")
    client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    client.command(
        f"CREATE TABLE IF NOT EXISTS {database}.{MIGRATIONS_TABLE} (version UInt32, description String, "
        "applied_at DateTime64(3, 'UTC')) ENGINE = ReplacingMergeTree ORDER BY version"
    )
    done = {row[0] for row in client.query(f"SELECT DISTINCT version FROM {database}.{MIGRATIONS_TABLE}").result_rows}
    applied = []
    for version, description, sql in MIGRATIONS:
        if version in done:
            continue
        client.command(sql.replace("{db}", database))
        client.insert(
            f"{database}.{MIGRATIONS_TABLE}",
            [[version, description, datetime.now(UTC)]],
            column_names=["version", "description", "applied_at"],
        )
        applied.append(version)
    for table in (EVENTS, CHECKPOINTS):
        set_retention(client, database, table, retention_days)
    return applied


def table_retention(client: Any, database: str, table: str) -> int | None:
    """The table's TTL in days, or None if it has none (or is not a MergeTree, e.g. a Distributed table)."""
    engine, full = _engine(client, database, table)
    return _ttl_days(full) if "MergeTree" in engine else None


def set_retention(client: Any, database: str, table: str, days: int) -> bool:
    """MODIFY TTL when it differs (a MergeTree only: on a cluster, change it ON CLUSTER on the _local tables)."""
    engine, full = _engine(client, database, table)
    if "MergeTree" not in engine or _ttl_days(full) == days:
        return False
    column = _TTL_COLUMN[table]
    client.command(f"ALTER TABLE {database}.{table} MODIFY TTL toDateTime({column}) + INTERVAL {days} DAY")
    return True


def _engine(client: Any, database: str, table: str) -> tuple[str, str]:
    rows = client.query(
        "SELECT engine, engine_full FROM system.tables WHERE database = {db:String} AND name = {t:String}",
        parameters={"db": database, "t": table},
    ).result_rows
    return (rows[0][0], rows[0][1]) if rows else ("", "")


def _ttl_days(engine_full: str) -> int | None:
    found = _TTL_DAYS.search(engine_full)
    return int(found.group(1)) if found else None


def check_database(name: str) -> str:
    """A database name goes into SQL as is: only a plain identifier."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"not a plain database name: {name!r}")
    return name


_CLUSTER_HEADER = """\
-- The audit tables on a ClickHouse cluster: ReplicatedMergeTree tables on every node (*_local) and Distributed
-- tables of the same name the gateway uses, so the gateway's queries and inserts are the same as on one server.
-- Generated by `python -m gateway.audit.schema > deploy/clickhouse/cluster.sql` from gateway/audit/schema.py:
-- change the columns there, not here.
--
-- Apply it once, before the first gateway starts (for another database than `gateway`, generate it with
-- `python -m gateway.audit.schema <database>`):
--     clickhouse-client --multiquery < deploy/clickhouse/cluster.sql
-- The cluster must define the macros {cluster}, {shard} and {replica}. The gateway then finds the tables and
-- records the migrations as done; it does not change the TTL of Distributed tables, so a new retention is set by
--     ALTER TABLE gateway.audit_events_local ON CLUSTER '{cluster}' MODIFY TTL toDateTime(ts) + INTERVAL 400 DAY;
--     ALTER TABLE gateway.audit_checkpoints_local ON CLUSTER '{cluster}'
--         MODIFY TTL toDateTime(created) + INTERVAL 400 DAY;
-- Events are sharded by event_id (a retried insert lands on the same shard, where the replicated insert
-- deduplication also sees it); each shipper (one per gateway replica) writes its own hash chain (`chain`).
"""


def cluster_sql(database: str = "gateway", days: int = DEFAULT_RETENTION_DAYS) -> str:
    """The DDL of deploy/clickhouse/cluster.sql."""
    on = " ON CLUSTER '{cluster}'"
    db = database

    def replicated(table: str) -> str:
        return f"ReplicatedMergeTree('/clickhouse/tables/{{shard}}/{db}/{table}', '{{replica}}')"

    statements = [
        f"CREATE DATABASE IF NOT EXISTS {db}{on}",
        f"CREATE TABLE IF NOT EXISTS {db}.{MIGRATIONS_TABLE}_local{on} (version UInt32, description String, "
        f"applied_at DateTime64(3, 'UTC'))\nENGINE = ReplicatedReplacingMergeTree("
        f"'/clickhouse/tables/{{shard}}/{db}/{MIGRATIONS_TABLE}', '{{replica}}')\nORDER BY version",
        events_ddl(f"{db}.{EVENTS}_local", replicated(EVENTS), on),
        f"ALTER TABLE {db}.{EVENTS}_local{on} MODIFY TTL toDateTime(ts) + INTERVAL {days} DAY",
        checkpoints_ddl(f"{db}.{CHECKPOINTS}_local", replicated(CHECKPOINTS), on),
        f"ALTER TABLE {db}.{CHECKPOINTS}_local{on} MODIFY TTL toDateTime(created) + INTERVAL {days} DAY",
    ]
    for table, key in ((MIGRATIONS_TABLE, "version"), (EVENTS, "cityHash64(event_id)"), (CHECKPOINTS, "seq")):
        statements.append(
            f"CREATE TABLE IF NOT EXISTS {db}.{table}{on} AS {db}.{table}_local\n"
            f"ENGINE = Distributed('{{cluster}}', {db}, {table}_local, {key})"
        )
    return _CLUSTER_HEADER + "\n" + ";\n\n".join(statements) + ";\n"


if __name__ == "__main__":
    import sys

    print(cluster_sql(sys.argv[1] if len(sys.argv) > 1 else "gateway"), end="")
