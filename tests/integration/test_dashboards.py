"""The Grafana dashboards in dashboards/ on a real audit trail: every panel's SQL, expanded as Grafana and the
ClickHouse plugin expand it (tests/grafana_macros.py, which cites the plugin sources it follows), runs against
the real schema in the embedded engine and returns what its panel draws, for All and for one team and model;
the counts match the traffic that made the rows.

The rows are made by a real gateway: two teams' keys send a known mix through the official openai SDK
(served, blocked, warned, shadowed, PII, a stream, an unknown model, a rate-limit and a budget refusal, a
budget alert, a bad key). The gateway is then stopped (the embedded engine admits one process per data
directory) and the store is opened here. The JSON itself is checked in tests/unit/test_dashboard_files.py.
"""

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import openai
import pytest

from gateway.audit.store import connect
from tests.conftest import create_key
from tests.dashboards import DASHBOARDS, clickhouse_panels, panel, variables
from tests.grafana_macros import ALL, Request, Variable, expand
from tests.integration.test_audit_trail import wait_for_shipper_exit
from tests.servers import UPSTREAM_SECRET, Mock, start

GATEWAY_YAML = """\
models:
  - name: mock-model
    provider: openai_compatible
    base_url: {mock}/v1
    api_key: env:TEST_UPSTREAM_KEY
    price: {{input: 0, output: 2.0}}
  - name: gpt-4o-mini
    provider: openai
    base_url: {mock}/v1
    api_key: env:TEST_UPSTREAM_KEY
    price: {{input: 0, output: 2.0}}
policies:
  dir: policies
pii:
  processes: 1
audit:
  spool_dir: spool
"""
# finance: 3 requests a minute per key; 50 micro-USD a month for the team, alert at half. A capped request
# (max_tokens 5, 2 micro-USD per output token, input free) costs 10.
POLICIES = """\
policies:
  - name: content
    rules:
      - {name: no-zebras, kind: terms, terms: [zebra]}
      - {name: lions, kind: terms, terms: [lion], action: warn}
  - name: research-privacy
    match: {teams: [research]}
    rules:
      - {name: personal-data, kind: pii, entities: {EMAIL_ADDRESS: mask}}
  - name: research-candidate
    mode: shadow
    match: {teams: [research]}
    rules:
      - {name: no-tigers, kind: terms, terms: [tiger]}
  - name: finance-limits
    match: {teams: [finance]}
    rules:
      - {name: three-a-minute, kind: rate_limit, per: [key], rpm: 3}
      - {name: monthly-spend, kind: budget, per: [team], usd: 0.00005, period: month, alert_percent: [50]}
"""
CAPPED = "hello there how are you today"  # the mock echoes 7 words: cut at max_tokens


@dataclass
class Traffic:
    """What was sent and what the SDK saw: the numbers the dashboards must show."""

    statuses: dict[str, list[int]] = field(default_factory=dict)  # by team ("" for the bad key)
    models: dict[str, list[str]] = field(default_factory=dict)
    output_tokens: int = 0  # as the SDK's usage reported them, on every answered request

    def record(self, team: str, model: str, status: int, tokens: int = 0) -> None:
        self.statuses.setdefault(team, []).append(status)
        self.models.setdefault(team, []).append(model)
        self.output_tokens += tokens

    def count(self, team: str | None = None, model: str | None = None) -> int:
        teams = [team] if team is not None else list(self.statuses)
        return sum(1 for t in teams for m in self.models[t] if model is None or m == model)


@dataclass
class Audit:
    client: Any
    traffic: Traffic
    start: datetime
    end: datetime

    def request(self, **variables: Variable) -> Request:
        return Request(self.start, self.end, timedelta(seconds=10), variables)

    def run(self, sql: str, request: Request) -> Any:
        return self.client.query(expand(sql, request))

    def columns(self, sql: str, request: Request) -> list[tuple[str, str]]:
        """Names and types of the result, which an empty result does not carry."""
        return [(row[0], row[1]) for row in self.client.query(f"DESCRIBE ({expand(sql, request)})").result_rows]


def send(sdk: openai.OpenAI, traffic: Traffic, team: str, text: str, model: str = "mock-model", **extra: Any) -> None:
    try:
        answer = sdk.chat.completions.create(
            model=model or "mock-model", messages=[{"role": "user", "content": text}], **extra
        )
    except openai.APIStatusError as error:
        traffic.record(team, model, error.status_code)
        return
    assert answer.usage is not None
    traffic.record(team, model, 200, answer.usage.completion_tokens)


def seed(url: str, keys: dict[str, str], traffic: Traffic) -> None:
    with openai.OpenAI(base_url=url + "/v1", api_key=keys["research"], max_retries=0) as sdk:
        send(sdk, traffic, "research", "hello")
        send(sdk, traffic, "research", "hello", "gpt-4o-mini")
        send(sdk, traffic, "research", "a zebra")  # blocked
        send(sdk, traffic, "research", "a lion")  # warned, on the input and the answer
        send(sdk, traffic, "research", "a tiger")  # a shadow hit
        send(sdk, traffic, "research", "write to alice.martin@example.com")  # PII, masked
        send(sdk, traffic, "research", "x", "nope")  # 404
        chunks = list(
            sdk.chat.completions.create(
                model="mock-model",
                messages=[{"role": "user", "content": "a stream"}],
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        assert chunks[-1].usage is not None
        traffic.record("research", "mock-model", 200, chunks[-1].usage.completion_tokens)
    for key in ("ledger", "reports"):  # 3 + 1 rate-limited; then 2 + 1 over the team's budget
        with openai.OpenAI(base_url=url + "/v1", api_key=keys[key], max_retries=0) as sdk:
            for _ in range(4 if key == "ledger" else 3):
                send(sdk, traffic, "finance", CAPPED, max_tokens=5)
    with openai.OpenAI(base_url=url + "/v1", api_key="gk-000000000000.bad", max_retries=0) as sdk:
        send(sdk, traffic, "", "hello", "")  # refused before its body is read: no team, no model


@pytest.fixture(scope="module")
def audit(mock: Mock, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Audit]:
    folder = tmp_path_factory.mktemp("dashboards")
    (folder / "policies").mkdir()
    (folder / "policies" / "main.yaml").write_text(POLICIES)
    config = folder / "gateway.yaml"
    config.write_text(GATEWAY_YAML.format(mock=mock.url))
    keys = {
        "research": create_key(config, "--team", "research", "--name", "lab-bot"),
        "ledger": create_key(config, "--team", "finance", "--name", "ledger"),
        "reports": create_key(config, "--team", "finance", "--name", "reports"),
    }
    start_time = datetime.now(UTC) - timedelta(minutes=1)
    command = ["-m", "gateway", "serve", "--config", str(config)]
    gateway = start(command, "/healthz", folder / "gateway.log", {"TEST_UPSTREAM_KEY": UPSTREAM_SECRET})
    traffic = Traffic()
    try:
        seed(gateway.url, keys, traffic)
        wait_shipped(gateway.url, traffic.count() + 1)  # and the budget alert
    finally:
        gateway.stop()
        wait_for_shipper_exit(folder)
    store = connect(f"chdb://{folder / 'audit-db'}")
    try:
        yield Audit(store.client, traffic, start_time, datetime.now(UTC) + timedelta(minutes=1))
    finally:
        store.close()


def wait_shipped(url: str, rows: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    shipper: dict[str, Any] = {}
    while time.monotonic() < deadline:
        shipper = httpx.get(url + "/readyz", timeout=5).json()["audit"]["shipper"] or {}
        if shipper.get("shipped", 0) >= rows and shipper.get("backlog_segments") == 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"{rows} rows not shipped in time: {shipper}")


# --- the panels' SQL on the seeded audit trail ----------------------------------------------------------------

SELECTIONS = {"all": {}, "one team and model": {"team": ("research",), "model": ("mock-model",)}}


def request_for(audit: Audit, dashboard: str, **selected: tuple[str, ...]) -> Request:
    """The request Grafana makes: each query variable's options come from its own query, run in order."""
    chosen: dict[str, Variable] = {}
    for variable in variables(DASHBOARDS[dashboard]):
        if variable["type"] != "query":
            continue
        name = variable["name"]
        options = tuple(str(row[0]) for row in audit.run(variable["definition"], audit.request(**chosen)).result_rows)
        chosen[name] = Variable(name, selected.get(name, (ALL,)), options)
    return audit.request(**chosen)


def run_panel(audit: Audit, dashboard: str, title: str, **selected: tuple[str, ...]) -> Any:
    [target] = panel(dashboard, title)["targets"]
    return audit.run(target["rawSql"], request_for(audit, dashboard, **selected))


def rows(audit: Audit, dashboard: str, title: str, **selected: tuple[str, ...]) -> list[dict[str, Any]]:
    result = run_panel(audit, dashboard, title, **selected)
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def value(audit: Audit, dashboard: str, title: str, **selected: tuple[str, ...]) -> Any:
    [row] = run_panel(audit, dashboard, title, **selected).result_rows
    return row[0]


def kind(type_name: str) -> str:
    while match := re.fullmatch(r"(?:Nullable|LowCardinality)\((.*)\)", type_name):
        type_name = match.group(1)
    if type_name.startswith(("DateTime", "Date")):
        return "time"
    if re.match(r"U?Int\d+$|Float\d+$|Decimal", type_name):
        return "number"
    if type_name.startswith(("String", "FixedString", "UUID", "Enum")):
        return "string"
    return type_name


def names_used(p: dict[str, Any]) -> set[str]:
    """The field names a panel's overrides, transformations and sorting refer to."""
    names = {o["matcher"]["options"] for o in p["fieldConfig"]["overrides"] if o["matcher"]["id"] == "byName"}
    renamed: dict[str, str] = {}
    for transformation in p.get("transformations", []):
        renamed.update(transformation["options"].get("renameByName", {}))
    names |= set(renamed)
    shown = {renamed.get(n, n) for n in names} | set(renamed.values())
    names |= {s["displayName"] for s in p["options"].get("sortBy", []) if s["displayName"] not in shown}
    return names


def check_shape(p: dict[str, Any], described: list[tuple[str, str]], data: list[Any]) -> None:
    columns, kinds = [name for name, _ in described], [kind(type_name) for _, type_name in described]
    if p["type"] == "timeseries":  # a time column first; long format (a text column) is made wide by the plugin
        assert kinds[0] == "time" and set(kinds[1:]) <= {"number", "string"} and "number" in kinds, kinds
        assert [row[0] for row in data] == sorted(row[0] for row in data), "time series must be in time order"
        if "string" in kinds:
            assert not names_used(p), "overrides by name need wide columns"
    elif p["type"] == "stat":
        assert len(data) == 1 and set(kinds) == {"number"}, (kinds, data)
    elif p["type"] == "barchart":
        assert kinds[columns.index(p["options"]["xField"])] == "string" and "number" in kinds, kinds
    elif p["type"] == "piechart":
        assert kinds.count("string") == 1 and "number" in kinds, kinds
    assert names_used(p) <= set(columns), f"{p['title']}: {names_used(p) - set(columns)} not in {columns}"


@pytest.mark.parametrize("selection", sorted(SELECTIONS))
@pytest.mark.parametrize(("name", "title"), [(n, p["title"]) for n, p in clickhouse_panels()])
def test_every_clickhouse_panel_runs_and_returns_what_its_panel_draws(
    audit: Audit, name: str, title: str, selection: str
) -> None:
    p = panel(name, title)
    request = request_for(audit, name, **SELECTIONS[selection])
    [target] = p["targets"]
    data = audit.run(target["rawSql"], request).result_rows
    check_shape(p, audit.columns(target["rawSql"], request), data)
    if selection == "all":
        assert data, "the seeded traffic should show on every panel"


def test_the_variables_offer_the_teams_and_models_that_sent_traffic(audit: Audit) -> None:
    everything = request_for(audit, "overview").variables
    assert everything["team"].options == ("finance", "research")
    assert everything["model"].options == ("gpt-4o-mini", "mock-model", "nope")
    assert request_for(audit, "overview", team=("finance",)).variables["model"].options == ("mock-model",)


def test_overview_counts_every_request_sent(audit: Audit) -> None:
    traffic = audit.traffic
    assert traffic.count() == 16 and value(audit, "overview", "Requests") == 16
    assert value(audit, "overview", "Requests", team=("research",)) == traffic.count("research") == 8
    both = value(audit, "overview", "Requests", team=("research", "finance"))
    assert both == traffic.count("research") + traffic.count("finance")  # the bad key has no team
    assert value(audit, "overview", "Requests", model=("mock-model",)) == traffic.count(model="mock-model")
    narrow = value(audit, "overview", "Requests", team=("research",), model=("mock-model",))
    assert narrow == traffic.count("research", "mock-model") == 6
    statuses = [s for team in traffic.statuses.values() for s in team]
    assert value(audit, "overview", "Error rate") == pytest.approx(sum(s >= 400 for s in statuses) / len(statuses))
    outcome = rows(audit, "overview", "Requests by outcome")
    totals = {column: sum(row[column] for row in outcome) for column in outcome[0] if column != "time"}
    assert totals == {"served": 11, "client_errors": 3, "throttled": 2, "server_errors": 0, "no_answer": 0}
    assert totals["served"] == statuses.count(200) and totals["throttled"] == statuses.count(429)


def test_security_counts_blocks_warnings_shadow_hits_and_personal_data(audit: Audit) -> None:
    counts = {
        title: value(audit, "security-and-compliance", title)
        for title in ("Blocked by policy", "Warnings", "Shadow hits", "Requests with PII", "PII entities")
    }
    assert counts == dict.fromkeys(counts, 1)  # one zebra, one lion, one tiger, one e-mail address
    assert value(audit, "security-and-compliance", "Rejected keys") == audit.traffic.statuses[""].count(401) == 1
    assert value(audit, "security-and-compliance", "Blocked by policy", team=("finance",)) == 0
    [worst] = rows(audit, "security-and-compliance", "Top keys by violations")
    assert (worst["key_name"], worst["blocked"], worst["warned"], worst["shadow_hits"], worst["violations"]) == (
        "lab-bot",
        1,
        1,
        1,
        3,
    )
    blocked = rows(audit, "security-and-compliance", "Recent blocked requests")
    assert sorted(row["rule"] for row in blocked) == ["monthly-spend", "no-zebras", "three-a-minute"]
    assert [row["entity"] for row in rows(audit, "security-and-compliance", "PII by entity")] == ["EMAIL_ADDRESS"]


def test_cost_is_what_the_sdk_was_billed_for_and_refusals_are_counted(audit: Audit) -> None:
    traffic = audit.traffic
    assert traffic.statuses["finance"] == [200, 200, 200, 429, 200, 200, 429]
    spend = value(audit, "cost-and-budgets", "Spend")
    assert spend == pytest.approx(traffic.output_tokens * 2 / 1_000_000) and traffic.output_tokens > 20
    assert value(audit, "cost-and-budgets", "Output tokens") == traffic.output_tokens
    assert value(audit, "cost-and-budgets", "Budget refusals") == 1
    assert value(audit, "cost-and-budgets", "Rate-limit refusals") == 1
    assert value(audit, "cost-and-budgets", "Budget alerts") == 1
    assert value(audit, "cost-and-budgets", "Budget alerts", team=("research",)) == 0
    [alert] = rows(audit, "cost-and-budgets", "Budget threshold alerts", team=("finance",))
    assert (alert["rule"], alert["scope_team"]) == ("monthly-spend", "finance")
    assert alert["detail"].startswith("50% of 0.000050 USD")
    refusals = rows(audit, "cost-and-budgets", "Rate-limit and budget refusals")
    assert sorted((r["key_name"], r["kind"], r["refusals"]) for r in refusals) == [
        ("ledger", "rate_limit", 1),
        ("reports", "budget", 1),
    ]
    by_key = {row["key_name"]: row["spend_usd"] for row in rows(audit, "cost-and-budgets", "Spend by team and key")}
    assert by_key["ledger"] == pytest.approx(30e-6) and by_key["reports"] == pytest.approx(20e-6)  # 3 and 2 capped


def test_audit_integrity_shows_every_row_in_a_signed_chain(audit: Audit) -> None:
    written = audit.traffic.count() + 1  # every request and the budget alert
    assert value(audit, "audit-integrity", "Chains") == 1  # one gateway, one shipper
    assert value(audit, "audit-integrity", "Checkpoints signed") >= 1
    assert value(audit, "audit-integrity", "Rows awaiting a checkpoint") == 0
    assert 0 <= value(audit, "audit-integrity", "Since the last checkpoint") < 600
    [head] = rows(audit, "audit-integrity", "Chain heads")
    assert (head["head_seq"], head["checkpoint_seq"], head["unsigned_rows"], head["events_in_range"]) == (
        written,
        written,
        0,
        written,
    )
    assert sum(row["rows_signed"] for row in rows(audit, "audit-integrity", "Checkpoints")) == written
    checkpoints = sorted(rows(audit, "audit-integrity", "Recent checkpoints"), key=lambda row: row["last_seq"])
    assert [row["first_seq"] for row in checkpoints] == [1] + [row["last_seq"] + 1 for row in checkpoints[:-1]]
    assert checkpoints[-1]["last_seq"] == written and {row["chain"] for row in checkpoints} == {head["chain"]}
