"""The renderers: one report model gives a self-contained HTML page, a PDF, a long-form CSV and JSON."""

import csv
import io
import json
import re
from decimal import Decimal

from gateway.reports import compliance
from gateway.reports.build import Progress
from gateway.reports.model import Chart, Column, Fact, Report, Section, Series, Table, usd

REPORT = Report(
    title="AI gateway compliance report",
    start="2026-11-01T00:00:00Z",
    end="2026-12-01T00:00:00Z",
    generated_at="2026-12-01T08:00:00Z",
    filters={"team": None},
    source={"config": "gateway.yaml", "store": "chdb:///srv/audit-db", "database": "gateway"},
    sections=(
        Section(
            "requests",
            "Requests",
            "info",
            "3 requests <all> & more",
            (Fact("requests", "Requests", 3, "int"), Fact("cost_usd", "Cost (USD)", usd(1234), "usd")),
            (
                Table(
                    "by_team",
                    "Requests by team",
                    (Column("team", "Team"), Column("requests", "Requests", "int"), Column("cost_usd", "Cost", "usd")),
                    (("finance", 2, usd(1000)), ("research", 1, usd(234))),
                ),
            ),
            (
                Chart(
                    "daily",
                    "Per day",
                    "stacked",
                    ("11-01", "11-02"),
                    (Series("2xx/3xx", (2, 1)), Series("5xx", (0, 1))),
                ),
                Chart("teams", "By team", "hbar", ("finance", "research"), (Series("requests", (2, 1)),)),
            ),
        ),
        Section("verification", "Chain verification", "ok", "OK", (Fact("ok", "Verified", True, "bool"),)),
    ),
)


def test_the_html_report_inlines_its_charts_and_fetches_nothing() -> None:
    html = compliance.render(REPORT, "html").decode()
    assert html.count("<svg") == 2 and "<?xml" not in html and "DOCTYPE svg" not in html
    assert not re.search(r'(src|href)="(?!#)', html) and "<script" not in html and "@import" not in html
    ids = re.findall(r'id="([^"]+)"', html)
    assert len(ids) == len(set(ids)), "two charts share an element id"
    assert "3 requests &lt;all&gt; &amp; more" in html and "0.001234" in html


def test_the_pdf_report_renders_a_page_with_content() -> None:
    import pypdfium2
    from PIL import ImageStat

    data = compliance.render(REPORT, "pdf")
    document = pypdfium2.PdfDocument(data)
    try:
        image = document[0].render(scale=1).to_pil().convert("L")
        text = document[0].get_textpage().get_text_range()
    finally:
        document.close()
    assert ImageStat.Stat(image).stddev[0] > 10
    assert "Requests by team" in text and "finance" in text


def test_the_csv_report_is_one_line_per_value_with_exact_dollars() -> None:
    lines = list(csv.DictReader(io.StringIO(compliance.render(REPORT, "csv").decode())))
    assert {"section": "requests", "table": "by_team", "row": "2", "column": "cost_usd", "value": "0.000234"} in lines
    assert {"section": "verification", "table": "facts", "row": "1", "column": "ok", "value": "true"} in lines


def test_the_json_report_keys_rows_by_column_and_keeps_dollars_exact() -> None:
    document = json.loads(compliance.render(REPORT, "json"))
    table = document["sections"][0]["tables"]["by_team"]
    assert table["rows"][0] == {"team": "finance", "requests": 2, "cost_usd": "0.001000"}
    assert Decimal(document["sections"][0]["facts"]["cost_usd"]["value"]) == Decimal("0.001234")
    assert document["period"] == {"start": "2026-11-01T00:00:00Z", "end": "2026-12-01T00:00:00Z", "end_excluded": True}


def test_progress_prints_one_line_per_step_only_when_enabled() -> None:
    shown, hidden = io.StringIO(), io.StringIO()
    Progress(True, shown).step(3, 9, "PII detections", 0.41)
    Progress(False, hidden).step(3, 9, "PII detections", 0.41)
    assert shown.getvalue() == "[3/9] PII detections… 0.4 s\n" and hidden.getvalue() == ""
