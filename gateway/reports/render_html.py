"""The report as one self-contained HTML file: inline CSS, inline SVG charts, no script, nothing fetched, so it
renders the same offline, in a mail attachment or in an archive years later. Printing it gives a clean copy."""

from html import escape

from gateway.reports import charts
from gateway.reports.model import Fact, Report, Section, Table, display

CSS = """
body{font:14px/1.45 -apple-system,"Segoe UI",Helvetica,Arial,sans-serif;color:#1d2430;margin:0;background:#f5f6f8}
main{max-width:1100px;margin:0 auto;padding:24px 32px 64px;background:#fff}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:36px 0 6px;border-bottom:2px solid #e4e7ec;padding-bottom:4px}
h3{font-size:14px;margin:18px 0 6px;color:#344054}.meta{color:#5b6474;margin:0 0 16px}
.badge{display:inline-block;font-size:11px;font-weight:600;padding:1px 8px;border-radius:9px;margin-left:8px;
vertical-align:middle}.ok{background:#dff3e4;color:#1e6b34}.attention{background:#fde7e4;color:#a1281b}
.info{background:#e8eef8;color:#2f4f86}.summary{margin:6px 0 12px}
dl{display:grid;grid-template-columns:repeat(auto-fill,minmax(220px,1fr));gap:6px 18px;margin:8px 0 12px}
dl div{border-left:3px solid #e4e7ec;padding-left:8px}dt{font-size:11px;color:#5b6474}dd{margin:0;font-weight:600}
table{border-collapse:collapse;width:100%;font-size:12px;margin:4px 0 6px}
th,td{border-bottom:1px solid #eceef2;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f0f2f5;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
.note{font-size:11px;color:#5b6474;margin:0 0 8px}.chart{margin:8px 0}.toc a{margin-right:12px}
.empty{color:#8a93a3;font-style:italic;font-size:12px}footer{margin-top:40px;font-size:11px;color:#5b6474}
@media print{body{background:#fff}main{padding:0}h2{break-after:avoid}table{break-inside:auto}}
"""
NUMERIC = ("int", "usd", "percent")
CHART_WIDTH = 760


def render(report: Report) -> bytes:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(report.title)}</title><style>{CSS}</style></head><body><main>",
        _header(report),
        *(_section(section) for section in report.sections),
        "<footer>Signed with Ed25519 in the detached file beside this one (<code>.sig</code>); check it with "
        "<code>gateway report verify FILE --config gateway.yaml</code>.</footer>",
        "</main></body></html>",
    ]
    return "\n".join(parts).encode()


def _header(report: Report) -> str:
    team = report.filters.get("team") or "all teams"
    links = " ".join(
        f'<a href="#{s.id}">{escape(s.title)}</a>' + (" ⚠" if s.status == "attention" else "") for s in report.sections
    )
    return (
        f"<h1>{escape(report.title)}</h1>"
        f'<p class="meta">Period {escape(display(report.start, "time"))} to {escape(display(report.end, "time"))} '
        f"(end excluded) · {escape(team)} · generated {escape(display(report.generated_at, 'time'))} · "
        f"store {escape(report.source.get('store', ''))} ({escape(report.source.get('database', ''))})</p>"
        f'<nav class="toc">{links}</nav>'
    )


def _section(section: Section) -> str:
    parts = [
        f'<section id="{escape(section.id)}"><h2>{escape(section.title)}'
        f'<span class="badge {section.status}">{section.status}</span></h2>',
        f'<p class="summary">{escape(section.summary)}</p>',
    ]
    if section.facts:
        parts.append("<dl>" + "".join(_fact(f) for f in section.facts) + "</dl>")
    for index, chart in enumerate(section.charts):
        if chart.categories:
            parts.append(f'<div class="chart">{charts.svg(chart, CHART_WIDTH, f"{section.id}-{index}")}</div>')
    parts += [_table(table) for table in section.tables]
    parts.append("</section>")
    return "\n".join(parts)


def _fact(fact: Fact) -> str:
    return f"<div><dt>{escape(fact.label)}</dt><dd>{escape(display(fact.value, fact.kind))}</dd></div>"


def _table(table: Table) -> str:
    head = f"<h3>{escape(table.title)}</h3>"
    note = f'<p class="note">{escape(table.note)}</p>' if table.note else ""
    if not table.rows:
        return head + '<p class="empty">None in this period.</p>' + note
    header = "".join(f"<th>{escape(c.title)}</th>" for c in table.columns)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="{"n" if c.kind in NUMERIC else ""}">{escape(display(value, c.kind))}</td>'
            for c, value in zip(table.columns, row, strict=True)
        )
        + "</tr>"
        for row in table.rows
    )
    return f"{head}<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>{note}"
