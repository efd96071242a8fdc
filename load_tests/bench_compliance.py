"""How long `gateway report compliance` takes over a month of 10 million audit rows in the embedded engine.

    python -m load_tests.bench_compliance [--rows 10000000] [--dir DIR] [--keep] [--verify-rows 200000]

1. seeds a fresh embedded engine (chDB) directory: the tables made by `gateway.audit.schema.migrate`, then one
   `INSERT ... SELECT ... FROM numbers(N)` with realistic distributions over the month (teams and their keys,
   models and deployments, statuses, block/warn/shadow decisions, PII, tokens and cost, three policy
   revisions, budget threshold events). The chain columns are synthetic (seq 1..N, made-up hashes): a real
   chain of 10M rows would take the shipper hours to write here, and verifying it is not what is timed;
2. times `gateway report compliance` for that month in json, html and pdf (a subprocess each, as a user runs
   it, `--verify skip`: the chain of synthetic rows cannot verify) and once with `--team`;
3. times the chain verification separately, on a real chain of `--verify-rows` rows written by the real
   AuditStore (signed checkpoints included), and extrapolates to 10M rows.

Writes the results to stdout (and `--out FILE` as markdown).
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.audit import schema

MONTH_START = datetime(2026, 10, 1, tzinfo=UTC)
MONTH_END = datetime(2026, 11, 1, tzinfo=UTC)
TEAMS = ("finance", "healthcare", "research", "support", "marketing", "platform", "legal", "sales")
TEAM_WEIGHTS = (18, 10, 22, 20, 8, 12, 3, 7)
KEYS_PER_TEAM = (6, 4, 9, 7, 3, 5, 2, 4)
MODELS = (  # (name, upstream model, provider, deployments, weight, input $/1M, output $/1M)
    ("gpt-4o-mini", "gpt-4o-mini-2024-07-18", "openai", ("openai", "azure-east"), 40, 0.15, 0.6),
    ("gpt-4o", "gpt-4o-2024-08-06", "openai", ("openai", "azure-east", "azure-west"), 20, 2.5, 10.0),
    ("claude-sonnet", "claude-sonnet-4-5", "anthropic", ("anthropic",), 15, 3.0, 15.0),
    ("llama", "meta-llama/Llama-3.1-8B-Instruct", "vllm", ("local-vllm",), 15, 0.0, 0.0),
    ("text-embedding-3-small", "text-embedding-3-small", "openai", ("openai",), 8, 0.02, 0.0),
    ("o3-mini", "o3-mini-2025-01-31", "openai", ("openai",), 2, 1.1, 4.4),
)
REVISIONS = (("3f9a1c0d5e7b2a41", 0.0), ("8b2e4d6f1a3c5e70", 0.35), ("c71d0e9f2b4a6c85", 0.8))
# (share per mille, status, error type, error code, decision (policy, rule, kind, action, where, detail) or None)
OUTCOMES = (
    (905, 200, "", "", None),
    (40, 200, "", "", ("baseline", "prompt-injection", "injection", "warn", "input", "ignore_previous")),
    (12, 200, "", "", ("developer-candidates", "no-names", "terms", "shadow", "output", "aurora")),
    (
        14,
        400,
        "invalid_request_error",
        "policy_violation",
        ("baseline", "no-credentials", "secrets", "block", "input", "aws_access_key"),
    ),
    (
        6,
        400,
        "invalid_request_error",
        "policy_violation",
        ("finance-strict", "deal-names", "terms", "block", "input", "project aurora"),
    ),
    (
        8,
        429,
        "rate_limit_error",
        "rate_limit_exceeded",
        ("quotas", "per-key", "rate_limit", "block", "input", "rpm 600+1 > 600"),
    ),
    (
        2,
        429,
        "rate_limit_error",
        "budget_exceeded",
        ("quotas", "monthly", "budget", "block", "input", "budget 2499000000+4000 > 2500000000"),
    ),
    (5, 502, "api_error", "upstream_unreachable", None),
    (2, 504, "api_error", "upstream_timeout", None),
    (4, 401, "authentication_error", "invalid_api_key", None),
    (2, 404, "invalid_request_error", "model_not_found", None),
)
PII = (("EMAIL_ADDRESS", "pseudonymise"), ("PHONE_NUMBER", "mask"), ("PERSON", "pseudonymise"),
       ("IP_ADDRESS", "hash"), ("CREDIT_CARD", "block"))  # fmt: skip


def _keys() -> list[tuple[str, str, str]]:
    """(key id, key name, team) with each team's keys in turn."""
    keys = []
    for team, count in zip(TEAMS, KEYS_PER_TEAM, strict=True):
        for n in range(count):
            keys.append((uuid.uuid5(uuid.NAMESPACE_DNS, f"{team}-{n}").hex[:12], f"{team}-app-{n}", team))
    return keys


def _weighted(values: list[str], weights: list[int]) -> str:
    """A ClickHouse array literal holding each value `weight` times: index it with a hash to draw from it."""
    return "[" + ",".join(f"'{v}'" for v, w in zip(values, weights, strict=True) for _ in range(w)) + "]"


def _literal(value: object) -> str:
    return "'" + str(value).replace("'", "\\'") + "'"


def _decisions(n: str) -> str:
    """The decisions of row n: a multiIf over the outcome drawn (per mille) for it."""
    branches, edge = [], 0
    for share, _status, _type, _code, decision in OUTCOMES:
        edge += share
        items = "[]" if decision is None else "[(" + ",".join(map(_literal, decision)) + ")]"
        branches.append(f"o < {edge}, {items}")
    return "multiIf(" + ", ".join(branches) + ", [])"


def _outcome_column(index: int) -> str:
    """One field of the outcome drawn for a row (status, error type or code), as a multiIf over `o`."""
    branches, edge = [], 0
    for outcome in OUTCOMES:
        edge += int(outcome[0])  # type: ignore[call-overload]
        value = outcome[index]
        branches.append(f"o < {edge}, {_literal(value) if isinstance(value, str) else value}")
    default = OUTCOMES[0][index]
    return "multiIf(" + ", ".join(branches) + f", {_literal(default) if isinstance(default, str) else default})"


def seed_sql(database: str, rows: int, start: datetime = MONTH_START, end: datetime = MONTH_END) -> str:
    """One INSERT ... SELECT that writes `rows` audit rows spread over [start, end), ts rising with seq."""
    keys = _keys()
    team_weight = dict(zip(TEAMS, TEAM_WEIGHTS, strict=True))
    key_weights = [team_weight[team] * 2 if n % 3 == 0 else team_weight[team] for n, (_, _, team) in enumerate(keys)]
    key_index = _weighted([str(i + 1) for i in range(len(keys))], key_weights)
    model_index = _weighted([str(i + 1) for i in range(len(MODELS))], [m[4] for m in MODELS])
    deployments = "[" + ",".join("[" + ",".join(map(_literal, m[3])) + "]" for m in MODELS) + "]"
    start_ms, span_ms = int(start.timestamp() * 1000), int((end - start).total_seconds() * 1000)
    revisions = " ".join(
        f"WHEN n >= {int(rows * at)} THEN {_literal(rev)}" for rev, at in sorted(REVISIONS, key=lambda r: -r[1])
    )
    pii_pairs = "[" + ",".join(f"({_literal(e)}, {_literal(a)})" for e, a in PII) + "]"
    status, code = _outcome_column(1), _outcome_column(3)
    names = ", ".join(schema.ALL_NAMES)
    return f"""
INSERT INTO {database}.{schema.EVENTS} ({names})
SELECT
    generateUUIDv4(n) AS event_id,
    fromUnixTimestamp64Milli(toInt64({start_ms} + intDiv(n * {span_ms}, {rows}))) AS ts,
    ts + toIntervalMillisecond(latency) AS ended,
    concat('req-', toString(n)) AS request_id,
    if(status = 401, '', {_literal_array([k[0] for k in keys])}[k]) AS key_id,
    if(status = 401, '', {_literal_array([k[1] for k in keys])}[k]) AS key_name,
    if(status = 401, '', {_literal_array([k[2] for k in keys])}[k]) AS team,
    concat('user-', toString(cityHash64(n, 4) % 400)) AS end_user,
    if(m = 5, 'embeddings', 'chat/completions') AS route,
    {_literal_array([m[0] for m in MODELS])}[m] AS model_requested,
    if(served, {_literal_array([m[1] for m in MODELS])}[m], '') AS model_served,
    if(served, {_literal_array([m[2] for m in MODELS])}[m], '') AS provider,
    if(served, {deployments}[m][1 + cityHash64(n, 5) % length({deployments}[m])], '') AS deployment,
    toUInt8(if(served, if(cityHash64(n, 6) % 100 < 3, 2, 1), 0)) AS attempts,
    toUInt16({status}) AS status,
    {_outcome_column(2)} AS error_type,
    {code} AS error_code,
    m != 5 AND cityHash64(n, 7) % 3 = 0 AS stream,
    cityHash64(n, 8) % 1000 < 4 AS client_disconnected,
    if(status = 401, '', CASE {revisions} ELSE '' END) AS policy_revision,
    {_decisions("n")} AS decisions,
    if(p < 60 AND status = 200, [({pii_pairs}[1 + p % 4].1, toUInt32(1 + p % 3), {pii_pairs}[1 + p % 4].2)],
       if(error_code = 'policy_violation' AND p < 300, [({pii_pairs}[5].1, toUInt32(1), {pii_pairs}[5].2)], [])) AS pii,
    toUInt32(if(served, 40 + cityHash64(n, 9) % 3000, 0)) AS tokens_in,
    toUInt32(if(served AND m != 5, 10 + cityHash64(n, 10) % 800, 0)) AS tokens_out,
    toUInt64(ceil(tokens_in * {_literal_array([m[5] for m in MODELS], False)}[m]
                  + tokens_out * {_literal_array([m[6] for m in MODELS], False)}[m])) AS cost_micro_usd,
    toFloat64(latency) AS latency_ms,
    if(served, latency * 0.95, 0) AS upstream_ms,
    if(stream AND served, latency * 0.2, NULL) AS ttft_ms,
    concat('10.0.', toString(k % 250), '.', toString(cityHash64(n, 11) % 250)) AS client_ip,
    'OpenAI/Python 1.99.0' AS user_agent,
    lower(hex(cityHash64(n, 12))) AS prompt_hash,
    if(served, lower(hex(cityHash64(n, 13))), '') AS answer_hash,
    '' AS body,
    toUInt64(n + 1) AS seq,
    lower(concat(hex(cityHash64(n, 14)), hex(cityHash64(n, 15)), hex(cityHash64(n, 16)), hex(cityHash64(n, 17))))
        AS prev_hash,
    lower(concat(hex(cityHash64(n, 18)), hex(cityHash64(n, 19)), hex(cityHash64(n, 20)), hex(cityHash64(n, 21))))
        AS hash,
    'gateway-1' AS chain
FROM (
    SELECT number AS n,
        cityHash64(n, 1) % 1000 AS o,
        {key_index}[1 + cityHash64(n, 2) % {sum(key_weights)}] AS k_text,
        toUInt32(k_text) AS k,
        toUInt32({model_index}[1 + cityHash64(n, 3) % {sum(m[4] for m in MODELS)}]) AS m,
        cityHash64(n, 22) % 1000 AS p,
        toUInt32(80 + cityHash64(n, 23) % 2500) AS latency,
        {status} AS status_drawn,
        status_drawn IN (200, 502, 504) AS served
    FROM numbers({rows})
)
SETTINGS max_insert_threads = 2
"""


def _literal_array(values: list[object], quote: bool = True) -> str:
    return "[" + ",".join(_literal(v) if quote else repr(float(v)) for v in values) + "]"  # type: ignore[arg-type]


def threshold_sql(database: str, rows: int) -> str:
    """Budget threshold events (route gateway/budget_threshold), as the limits stage records them."""
    names = ", ".join(schema.ALL_NAMES)
    values = []
    for n, (team, day, percent) in enumerate((("research", 18, 80), ("support", 22, 80), ("research", 27, 95))):
        ts = (MONTH_START + timedelta(days=day, hours=10)).strftime("%Y-%m-%d %H:%M:%S")
        detail = f"{percent}% of 2500.000000 USD 2026-10 team={team}"
        values.append(
            f"(generateUUIDv4({n}), '{ts}', '{ts}', 'alert-{n}', '', '', '', '', 'gateway/budget_threshold', '', '', "
            f"'', '', 0, 0, '', '', false, false, '', [('quotas', 'monthly', 'budget', 'warn', 'output', '{detail}')], "
            f"[], 0, 0, 0, 0, 0, NULL, '', '', '', '', '', {rows + 1 + n}, '', '', 'gateway-1')"
        )
    return f"INSERT INTO {database}.{schema.EVENTS} ({names}) VALUES {', '.join(values)}"


GATEWAY_YAML = """\
models:
{models}
audit:
  clickhouse_url: chdb://{db}
  retention_days: 400
policies:
  dir: policies
limits:
  timezone: Europe/Berlin
"""
POLICIES = """\
policies:
  - name: quotas
    rules:
      - {name: per-key, kind: rate_limit, per: [key], rpm: 600}
      - {name: monthly, kind: budget, per: [team], usd: 2500, period: month, alert_percent: [80, 95]}
      - {name: daily-per-key, kind: budget, per: [key], usd: 40, period: day}
  - name: finance-strict
    match: {teams: [finance]}
    rules:
      - {name: deal-names, kind: terms, terms: [project aurora]}
      - {name: finance-weekly, kind: budget, per: [team, model], usd: 800, period: week}
"""


def write_config(folder: Path, db: Path) -> Path:
    """A gateway.yaml naming the bench's models (their deployments) and budget rules, reading the seeded engine."""
    lines = []
    for name, upstream, provider, deployments, *_ in MODELS:
        lines.append(f"  - name: {name}\n    model: {upstream}\n    deployments:")
        kind = {"vllm": "vllm", "anthropic": "anthropic"}.get(provider, "openai_compatible")
        for label in deployments:
            lines.append(f"      - {{name: {label}, provider: {kind}, base_url: 'http://127.0.0.1:9/v1'}}")
    (folder / "policies").mkdir(exist_ok=True)
    (folder / "policies" / "main.yaml").write_text(POLICIES)
    config = folder / "gateway.yaml"
    config.write_text(GATEWAY_YAML.format(models="\n".join(lines), db=db))
    return config


def seed(db: Path, rows: int) -> float:
    """Create the tables and the rows in a fresh engine directory; the seconds it took."""
    import clickhouse_connect

    client = clickhouse_connect.get_client(dsn=f"chdb://{db}")
    try:
        schema.migrate(client, "gateway", 400)
        started = time.perf_counter()
        client.command(seed_sql("gateway", rows))
        client.command(threshold_sql("gateway", rows))
        return time.perf_counter() - started
    finally:
        client.close()


def run_report(config: Path, out: Path, *extra: str) -> tuple[float, str]:
    """`gateway report compliance` for the seeded month as a user runs it: wall time, progress lines."""
    command = [sys.executable, "-m", "gateway", "report", "compliance", "--config", str(config),
               "--from", MONTH_START.date().isoformat(), "--to", MONTH_END.date().isoformat(), "--out", str(out),
               "--progress", *extra]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    return elapsed, done.stderr


def time_verify(folder: Path, rows: int) -> tuple[float, int]:
    """Write a real chain of `rows` events with the real AuditStore (signed checkpoints every 5000), then time
    AuditStore.verify over all of it: (seconds, rows verified)."""
    from gateway.audit.chain import Signer
    from gateway.audit.store import connect

    signer = Signer.load_or_create(folder / "verify-key")
    store = connect(f"chdb://{folder / 'verify-db'}", signer=signer)
    try:
        store.migrate()
        moment = MONTH_START
        for batch in range(0, rows, 5000):
            events = []
            for n in range(batch, min(batch + 5000, rows)):
                moment += timedelta(milliseconds=250)
                events.append(_event(n, moment))
            store.insert(events)
        started = time.perf_counter()
        result = store.verify()
        elapsed = time.perf_counter() - started
        assert result.ok, result.first_problem
        return elapsed, result.rows_checked
    finally:
        store.close()


def _event(n: int, moment: datetime) -> dict[str, object]:
    team = TEAMS[n % len(TEAMS)]
    decisions = [{"policy": "baseline", "rule": "prompt-injection", "kind": "injection", "action": "warn",
                  "where": "input", "detail": "ignore_previous"}] if n % 10 == 0 else []  # fmt: skip
    return {
        "event_id": str(uuid.uuid4()), "ts": moment.isoformat(), "ended": moment.isoformat(),
        "request_id": f"req-{n}", "key_id": f"{n % 40:012x}", "key_name": f"{team}-app", "team": team,
        "route": "chat/completions", "model_requested": "gpt-4o-mini", "model_served": "gpt-4o-mini-2024-07-18",
        "provider": "openai", "deployment": "openai", "attempts": 1, "status": 200,
        "policy_revision": "3f9a1c0d5e7b2a41",
        "decisions": decisions, "pii": [], "tokens_in": 400 + n % 300, "tokens_out": 120, "cost_micro_usd": 150,
        "latency_ms": 812.5, "upstream_ms": 790.1, "client_ip": "10.0.3.17", "user_agent": "OpenAI/Python 1.99.0",
        "prompt_hash": "ab" * 32, "answer_hash": "cd" * 32,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--dir", type=Path, help="work here (default: a temporary directory, removed after)")
    parser.add_argument("--keep", action="store_true", help="keep the seeded engine (with --dir: reuse it)")
    parser.add_argument("--verify-rows", type=int, default=200_000, help="0: do not time the verification")
    parser.add_argument("--formats", default="json,html,pdf,csv")
    parser.add_argument("--out", type=Path, help="also write the results here (markdown)")
    args = parser.parse_args()
    folder = args.dir or Path(tempfile.mkdtemp(prefix="bench-compliance-"))
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"# Compliance report over {args.rows:,} audit rows (embedded engine)", ""]
    try:
        db = folder / "audit-db"
        if not (args.keep and db.exists()):
            shutil.rmtree(db, ignore_errors=True)
            lines.append(f"- seeded {args.rows:,} rows in {seed(db, args.rows):.1f} s (INSERT ... SELECT FROM numbers)")
        config = write_config(folder, db)
        for fmt in args.formats.split(","):
            for verify in ("skip", "checkpoints"):
                elapsed, progress = run_report(config, folder / f"report.{fmt}", "--verify", verify)
                size = (folder / f"report.{fmt}").stat().st_size
                lines.append(f"- {fmt:5} --verify {verify:11}: {elapsed:.2f} s wall, {size:,} bytes")
                lines += [f"    {line}" for line in progress.splitlines()]
        elapsed, _ = run_report(config, folder / "team.json", "--team", "finance", "--verify", "skip")
        lines.append(f"- json --team finance --verify skip: {elapsed:.2f} s")
        if args.verify_rows:
            seconds, checked = time_verify(folder, args.verify_rows)
            per_row = seconds / checked
            lines.append(
                f"- full chain verification (AuditStore.verify) of a real chain of {checked:,} rows: {seconds:.1f} s "
                f"({per_row * 1e6:.1f} µs/row, so about {per_row * args.rows / 60:.0f} min for {args.rows:,} rows)"
            )
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
