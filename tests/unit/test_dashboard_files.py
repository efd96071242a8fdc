"""The dashboards' JSON and provisioning files hold what Grafana needs to load them (Grafana cannot run in CI):
unique panel ids on a grid that does not overlap, data sources that resolve to provisioned ones, variables
defined before use, ClickHouse targets in the plugin's SQL mode narrowed by the team and model variables,
PromQL that parses and reads the gateway's spool metrics; the README's compose snippet mounts what the
provisioning files point at.
"""

import json
import re
from typing import Any

import promql_parser
import pytest
import yaml

from tests.dashboards import (
    CLICKHOUSE,
    DASHBOARDS,
    ROOT,
    clickhouse_panels,
    panel,
    panels,
    provisioned,
    referenced,
    variables,
)

SPOOL_METRICS = {"gateway_audit_spool_bytes", "gateway_audit_spool_segments", "gateway_audit_lost_events_total"}


def test_the_four_dashboards_are_there() -> None:
    assert set(DASHBOARDS) == {"overview", "cost-and-budgets", "security-and-compliance", "audit-integrity"}
    assert len({d["uid"] for d in DASHBOARDS.values()}) == 4 and len(clickhouse_panels()) > 40


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_a_dashboard_is_valid_grafana_json(name: str) -> None:
    dashboard = DASHBOARDS[name]
    assert dashboard["schemaVersion"] == 41 and dashboard["id"] is None and len(dashboard["uid"]) <= 40
    assert dashboard["title"] and dashboard["time"]["from"] and isinstance(dashboard["editable"], bool)
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for p in panels(dashboard):
        grid = p["gridPos"]
        assert {type(grid[k]) for k in ("h", "w", "x", "y")} == {int} and grid["x"] + grid["w"] <= 24, p["title"]
        mine = {
            (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & mine, f"{p['title']} overlaps another panel"
        cells |= mine
        assert p["type"] in {"timeseries", "stat", "table", "barchart", "piechart"} and p["targets"], p["title"]
        assert p["description"], f"{p['title']}: say what the panel shows"


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_data_sources_resolve_and_variables_are_defined_before_use(name: str) -> None:
    dashboard = DASHBOARDS[name]
    sources = provisioned()
    defined: dict[str, dict[str, Any]] = {}
    for variable in variables(dashboard):
        if variable["type"] == "datasource":  # defaults to a provisioned source of its plugin type
            assert sources[variable["current"]["value"]] == variable["query"]
        else:
            assert variable["query"]["rawSql"] == variable["definition"]
            assert referenced(variable["definition"]) <= set(defined), f"{variable['name']} uses a later variable"
            check_source(variable["datasource"], defined, sources)
        defined[variable["name"]] = variable
    for p in panels(dashboard):
        for target in [p, *p["targets"]]:
            check_source(target["datasource"], defined, sources)
        text = json.dumps(p)
        assert referenced(text) <= set(defined), f"{p['title']} uses an undefined variable"


def check_source(source: dict[str, str], defined: dict[str, dict[str, Any]], sources: dict[str, str]) -> None:
    uid, kind = source["uid"], source["type"]
    names = referenced(uid)
    if names:
        [name] = names
        assert defined[name]["type"] == "datasource" and defined[name]["query"] == kind, uid
    else:
        assert sources[uid] == kind, uid


@pytest.mark.parametrize(("name", "title"), [(n, p["title"]) for n, p in clickhouse_panels()])
def test_clickhouse_targets_are_raw_sql_filtered_by_the_dashboard_variables(name: str, title: str) -> None:
    p = panel(name, title)
    [target] = p["targets"]
    fmt = 0 if p["type"] == "timeseries" else 1  # the plugin's format: 0 time series, 1 table
    assert (target["editorType"], target["format"], target["queryType"]) == (
        "sql",
        fmt,
        "timeseries" if fmt == 0 else "table",
    )
    sql = target["rawSql"]
    names = {v["name"] for v in variables(DASHBOARDS[name])}
    if "team" in names:  # every panel narrows to the chosen teams and models, or says why it cannot
        assert "$__conditionalAll(" in sql and "$team)" in sql, title
        assert "$model)" in sql or "not filtered by model" in p["description"], title
    elif "audit_events" in sql:
        assert "not filtered by them" in p["description"], title


def test_provisioning_creates_the_data_sources_and_loads_the_dashboards_folder() -> None:
    text = (ROOT / "provisioning" / "datasources" / "datasources.yaml").read_text()
    clickhouse, prometheus = yaml.safe_load(text)["datasources"]
    assert clickhouse["type"] == CLICKHOUSE and clickhouse["jsonData"]["defaultDatabase"] == "gateway"
    assert {"host", "port", "protocol"} <= set(clickhouse["jsonData"]) and clickhouse["jsonData"]["protocol"] in {
        "native",
        "http",
    }
    assert prometheus["type"] == "prometheus" and prometheus["url"]
    providers = yaml.safe_load((ROOT / "provisioning" / "dashboards" / "dashboards.yaml").read_text())["providers"]
    [provider] = providers
    assert provider["type"] == "file" and provider["options"]["path"]
    readme = (ROOT / "README.md").read_text()
    compose = yaml.safe_load(re.search(r"```yaml\n(services:.*?)```", readme, re.S).group(1))  # type: ignore[union-attr]
    mounts = dict(volume.split(":")[:2] for volume in compose["services"]["grafana"]["volumes"])
    assert mounts["../dashboards"] == provider["options"]["path"]
    assert mounts["../dashboards/provisioning/datasources"] == "/etc/grafana/provisioning/datasources"
    assert mounts["../dashboards/provisioning/dashboards"] == "/etc/grafana/provisioning/dashboards"


def test_prometheus_panels_query_the_gateway_spool_metrics() -> None:
    expressions = [
        target["expr"]
        for p in panels(DASHBOARDS["audit-integrity"])
        if p["datasource"]["type"] == "prometheus"
        for target in p["targets"]
    ]
    assert len(expressions) >= 4
    used = set()
    for expr in expressions:
        parsed = promql_parser.parse(re.sub(r"\$__(rate_interval|range|interval)", "5m", expr))
        used |= set(re.findall(r"\bgateway_\w+", str(parsed)))
        assert re.search(r"(rate|increase)\(gateway_audit_lost_events_total", expr) or "lost" not in expr, expr
    assert used == SPOOL_METRICS
