"""The compliance report of a running gateway: known traffic from two teams through the official openai SDK
(blocked, warned, PII, budgeted), shipped into the embedded engine, then `gateway report compliance` in every
format (while the gateway runs, through the shipper; and after it stopped) and `gateway report verify`."""

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import create_key
from tests.integration.test_audit_trail import AuditedGateway
from tests.servers import MOCK_MODELS, Mock, gateway_command

GATEWAY_YAML = MOCK_MODELS + "policies:\n  dir: policies\naudit:\n  spool_dir: spool\npii:\n  processes: 1\n"
POLICY = """\
policies:
  - name: main
    rules:
      - {name: no-zebras, kind: terms, terms: [zebra]}
      - {name: lions, kind: terms, terms: [lion], action: warn, where: [input]}
      - {name: personal-data, kind: pii, entities: {EMAIL_ADDRESS: pseudonymise}}
      - {name: monthly, kind: budget, per: [team], usd: 100, period: month}
"""
TODAY = datetime.now(UTC).date()
PERIOD = ("--from", (TODAY - timedelta(days=1)).isoformat(), "--to", (TODAY + timedelta(days=2)).isoformat())
SENT = {"finance": 5, "research": 4}


@pytest.fixture(scope="module")
def traffic(mock: Mock, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuditedGateway]:
    """A gateway that served known traffic: finance 3 plain, 1 zebra (blocked), 1 lion (warned); research 2
    plain, 1 with two e-mail addresses, 1 zebra. The audit rows are shipped; the gateway is still running."""
    folder = tmp_path_factory.mktemp("compliance")
    (folder / "policies").mkdir()
    (folder / "policies" / "main.yaml").write_text(POLICY)
    config = folder / "gateway.yaml"
    config.write_text(GATEWAY_YAML.format(mock=mock.url))
    finance = create_key(config, "--team", "finance", "--name", "ledger")
    research = create_key(config, "--team", "research", "--name", "lab")
    gateway = AuditedGateway(folder, config, finance)
    gateway.start()
    try:
        prompts = {
            finance: ["hello", "what is a ledger", "sum these", "a zebra", "a lion"],
            research: ["hi", "an experiment", "mail ann@example.com and bob@example.org", "zebra stripes"],
        }
        for key, texts in prompts.items():
            with openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0, timeout=30) as sdk:
                for text in texts:
                    try:
                        sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": text}])
                    except openai.BadRequestError:
                        assert "zebra" in text
        gateway.wait_shipped(sum(SENT.values()))
        yield gateway
    finally:
        gateway.stop()


def report(gateway: AuditedGateway, out: Path, *extra: str) -> dict[str, Any]:
    result = gateway_command(
        "report", "compliance", "--config", str(gateway.config), *PERIOD, "--out", str(out), *extra
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert Path(str(out) + ".sig").exists() and "signed by" in result.stdout
    return json.loads(out.read_text()) if out.suffix == ".json" else {}


def rows(table: dict[str, Any], key: str) -> dict[str, dict[str, Any]]:
    return {row[key]: row for row in table["rows"]}


def costs(gateway: AuditedGateway) -> dict[str, Decimal]:
    """Each team's cost as the audit rows themselves say (`gateway audit query`), in dollars."""
    spent: dict[str, int] = {}
    for row in gateway.rows():
        spent[row["team"]] = spent.get(row["team"], 0) + row["cost_micro_usd"]
    return {team: Decimal(micro) / Decimal(1_000_000) for team, micro in spent.items()}


def test_the_json_report_counts_the_known_traffic_while_the_gateway_runs(traffic: AuditedGateway) -> None:
    document = report(traffic, traffic.folder / "report.json", "--verify", "full")
    sections = {s["id"]: s for s in document["sections"]}
    assert [s["id"] for s in document["sections"]][:3] == ["period", "policies", "requests"]
    assert sections["period"]["facts"]["requests"]["value"] == 9
    teams = rows(sections["requests"]["tables"]["by_team"], "team")
    assert {t: r["requests"] for t, r in teams.items()} == SENT
    assert (teams["finance"]["ok"], teams["finance"]["client_error"]) == (4, 1)
    blocks = {(r["rule"], r["action"]): r["requests"] for r in sections["decisions"]["tables"]["by_rule"]["rows"]}
    assert blocks[("no-zebras", "block")] == 2 and blocks[("lions", "warn")] == 1
    pii = sections["pii"]["tables"]["by_entity"]["rows"]
    assert [(p["entity"], p["action"], p["detections"], p["requests"]) for p in pii] == [
        ("EMAIL_ADDRESS", "pseudonymise", 2, 1)
    ]
    spent = costs(traffic)
    by_team = rows(sections["spend"]["tables"]["by_team"], "team")
    assert {t: Decimal(r["cost_usd"]) for t, r in by_team.items()} == spent and spent["finance"] > 0
    budgets = {r["scope"]: r for r in sections["spend"]["tables"]["budgets"]["rows"]}
    assert Decimal(budgets["team=finance"]["spent_usd"]) == spent["finance"]
    assert budgets["team=research"]["limit_usd"] == "100.000000" and budgets["team=research"]["refused"] == 0
    revisions = sections["policies"]["tables"]["revisions"]["rows"]
    assert len(revisions) == 1 and revisions[0]["requests"] == 9 and revisions[0]["current"] is True
    assert sections["coverage"]["facts"]["missing_seqs"]["value"] == 0
    assert sections["coverage"]["facts"]["audit_rows"]["value"] == 9
    verification = sections["verification"]["facts"]
    assert verification["ok"]["value"] is True and verification["rows_checked"]["value"] >= 9
    retention = sections["retention"]["facts"]
    assert retention["retention_days"]["value"] == retention["events_ttl_days"]["value"] == 400
    assert retention["bodies_stored"]["value"] is False


def test_a_team_report_holds_only_that_team(traffic: AuditedGateway) -> None:
    document = report(traffic, traffic.folder / "finance.json", "--team", "finance", "--verify", "checkpoints")
    sections = {s["id"]: s for s in document["sections"]}
    assert document["filters"] == {"team": "finance"}
    assert sections["period"]["facts"]["requests"]["value"] == SENT["finance"]
    assert list(rows(sections["requests"]["tables"]["by_team"], "team")) == ["finance"]
    blocks = {r["rule"]: r["requests"] for r in sections["decisions"]["tables"]["by_rule"]["rows"]}
    assert blocks == {"no-zebras": 1, "lions": 1}
    assert sections["pii"]["tables"]["by_entity"]["rows"] == []
    assert sections["verification"]["facts"]["ok"]["value"] is True
    assert sections["verification"]["facts"]["checkpoints_checked"]["value"] >= 1


def test_the_csv_report_has_one_line_per_value(traffic: AuditedGateway) -> None:
    out = traffic.folder / "report.csv"
    report(traffic, out, "--verify", "skip")
    lines = list(csv.DictReader(io.StringIO(out.read_text())))
    assert list(lines[0]) == ["section", "table", "row", "column", "value"]
    by_team = [line for line in lines if line["section"] == "requests" and line["table"] == "by_team"]
    counted = {}
    for number in {line["row"] for line in by_team}:
        cells = {line["column"]: line["value"] for line in by_team if line["row"] == number}
        counted[cells["team"]] = int(cells["requests"])
    assert counted == SENT
    assert {"section": "period", "table": "facts", "row": "1", "column": "requests", "value": "9"} in lines


def test_the_html_report_is_one_self_contained_file_with_charts(traffic: AuditedGateway) -> None:
    out = traffic.folder / "report.html"
    report(traffic, out, "--verify", "skip")
    html = out.read_text()
    assert html.startswith("<!DOCTYPE html>") and html.count("<svg") >= 4
    assert "<script" not in html and "<link" not in html and 'src="' not in html and "@import" not in html
    assert "no-zebras" in html and "EMAIL_ADDRESS" in html and "finance" in html


def test_the_pdf_report_is_signed_and_its_first_page_is_not_blank(traffic: AuditedGateway) -> None:
    import pypdfium2
    from PIL import ImageStat

    traffic.stop()  # the report now reads the embedded engine in its own process
    out = traffic.folder / "report.pdf"
    report(traffic, out, "--verify", "full")
    assert out.read_bytes().startswith(b"%PDF")
    document = pypdfium2.PdfDocument(out)
    try:
        image = document[0].render(scale=1).to_pil().convert("L")
    finally:
        document.close()
    assert ImageStat.Stat(image).stddev[0] > 10, "the first page is blank"
    verify = verify_report(traffic, out)
    assert verify.returncode == 0 and verify.stdout.startswith("valid, signed by "), verify.stdout + verify.stderr


def verify_report(gateway: AuditedGateway, path: Path, *extra: str) -> Any:
    return gateway_command("report", "verify", str(path), "--config", str(gateway.config), *extra)


def test_report_verify_names_a_tampered_file_an_unknown_key_and_a_missing_signature(
    traffic: AuditedGateway, tmp_path: Path
) -> None:
    out = traffic.folder / "tamper.json"
    report(traffic, out, "--verify", "skip")
    assert verify_report(traffic, out).returncode == 0
    data = bytearray(out.read_bytes())
    data[len(data) // 2] ^= 0x01
    out.write_bytes(bytes(data))
    tampered = verify_report(traffic, out)
    assert tampered.returncode == 1 and "tampered content" in tampered.stdout, tampered.stdout
    from gateway.audit.chain import Signer

    other = Signer.load_or_create(tmp_path / "other.key")
    alone = gateway_command("report", "verify", str(out), "--key", str(tmp_path / "other.pub"))
    assert alone.returncode == 1 and "unknown key" in alone.stdout and other.public_key_id in alone.stdout
    Path(str(out) + ".sig").unlink()
    missing = verify_report(traffic, out)
    assert missing.returncode == 1 and "missing signature" in missing.stdout
