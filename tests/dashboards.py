"""The Grafana dashboards in dashboards/ as data, for the tests: their panels, variables and data sources."""

import json
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1] / "dashboards"
DASHBOARDS = {path.stem: json.loads(path.read_text()) for path in sorted(ROOT.glob("*.json"))}
CLICKHOUSE = "grafana-clickhouse-datasource"
# Grafana's variable syntax: $name, [[name:format]], ${name.path:format}
GRAFANA_VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::\w+)?\]\]|\$\{(\w+)(?:\.[^:^\}]+)?(?::[^\}]+)?\}")


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    flat = []
    for panel in dashboard["panels"]:
        flat.append(panel)
        flat.extend(panel.get("panels", []))  # a collapsed row holds its panels
    return flat


def variables(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return dashboard["templating"]["list"]  # type: ignore[no-any-return]


def referenced(text: str) -> set[str]:
    """The dashboard variables a text uses (Grafana's own `$__` names excluded)."""
    names = {a or b or c for a, b, c in GRAFANA_VARIABLE.findall(text)}
    return {name for name in names if not name.startswith("__")}


def clickhouse_panels() -> list[tuple[str, dict[str, Any]]]:
    return [
        (name, panel)
        for name, dashboard in DASHBOARDS.items()
        for panel in panels(dashboard)
        if panel.get("datasource", {}).get("type") == CLICKHOUSE
    ]


def panel(dashboard: str, title: str) -> dict[str, Any]:
    [found] = [p for p in panels(DASHBOARDS[dashboard]) if p["title"] == title]
    return found


def provisioned() -> dict[str, str]:
    """uid → type of the data sources the provisioning file creates."""
    text = (ROOT / "provisioning" / "datasources" / "datasources.yaml").read_text()
    return {source["uid"]: source["type"] for source in yaml.safe_load(text)["datasources"]}
