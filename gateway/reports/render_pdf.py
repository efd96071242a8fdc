"""The report as a PDF for filing (reportlab): landscape A4, every section with its facts, charts and tables,
the period and page number on every page."""

import io
from typing import Any

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import KeepTogether, Paragraph, SimpleDocTemplate, Spacer, TableStyle
from reportlab.platypus import Table as PdfTable

from gateway.reports import charts
from gateway.reports.model import Report, Section, Table, display

PAGE = landscape(A4)
MARGIN = 14 * mm
WIDTH = PAGE[0] - 2 * MARGIN
STATUS_COLOURS = {"ok": "#1e6b34", "attention": "#a1281b", "info": "#2f4f86"}
WRAP_AT = 28  # text cells longer than this wrap (a Paragraph); shorter ones stay plain strings (faster)


def _styles() -> dict[str, ParagraphStyle]:
    base = getSampleStyleSheet()
    return {
        "title": ParagraphStyle("title", parent=base["Title"], fontSize=18, spaceAfter=4, alignment=0),
        "meta": ParagraphStyle("meta", parent=base["Normal"], fontSize=9, textColor=colors.HexColor("#5b6474")),
        "h2": ParagraphStyle("h2", parent=base["Heading2"], fontSize=13, spaceBefore=10, spaceAfter=3),
        "h3": ParagraphStyle("h3", parent=base["Heading3"], fontSize=9.5, spaceBefore=6, spaceAfter=2),
        "body": ParagraphStyle("body", parent=base["Normal"], fontSize=9, leading=12),
        "note": ParagraphStyle("note", parent=base["Normal"], fontSize=7, textColor=colors.HexColor("#5b6474")),
        "cell": ParagraphStyle("cell", parent=base["Normal"], fontSize=6.5, leading=8),
    }


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render(report: Report) -> bytes:
    styles = _styles()
    buffer = io.BytesIO()
    document = SimpleDocTemplate(
        buffer,
        pagesize=PAGE,
        leftMargin=MARGIN,
        rightMargin=MARGIN,
        topMargin=MARGIN,
        bottomMargin=MARGIN + 4,
        title=report.title,
        author="AI governance gateway",
        subject=f"{report.start} to {report.end}",
    )
    team = report.filters.get("team") or "all teams"
    period = f"{display(report.start, 'time')} to {display(report.end, 'time')} (end excluded)"
    story: list[Any] = [
        Paragraph(_escape(report.title), styles["title"]),
        Paragraph(
            _escape(
                f"Period {period} · {team} · generated {display(report.generated_at, 'time')} · store "
                f"{report.source.get('store', '')} ({report.source.get('database', '')})"
            ),
            styles["meta"],
        ),
    ]
    for section in report.sections:
        story += _section(section, styles)

    def footer(canvas: Any, doc: Any) -> None:
        canvas.saveState()
        canvas.setFont("Helvetica", 7)
        canvas.setFillColor(colors.HexColor("#5b6474"))
        canvas.drawString(MARGIN, MARGIN / 2, f"{report.title} · {period} · signed: see the .sig file beside this one")
        canvas.drawRightString(PAGE[0] - MARGIN, MARGIN / 2, f"page {doc.page}")
        canvas.restoreState()

    document.build(story, onFirstPage=footer, onLaterPages=footer)
    return buffer.getvalue()


def _section(section: Section, styles: dict[str, ParagraphStyle]) -> list[Any]:
    colour = STATUS_COLOURS[section.status]
    heading = Paragraph(
        f'{_escape(section.title)} <font size="8" color="{colour}">[{section.status}]</font>', styles["h2"]
    )
    flow: list[Any] = [heading, Paragraph(_escape(section.summary), styles["body"])]
    if section.facts:
        flow.append(_facts(section, styles))
    for chart in section.charts:
        if chart.categories:
            flow += [Spacer(1, 4), charts.drawing(chart, min(WIDTH, 620))]
    for table in section.tables:
        flow += _table(table, styles)
    return [KeepTogether(flow[:3]), *flow[3:]]


def _facts(section: Section, styles: dict[str, ParagraphStyle]) -> PdfTable:
    cells = [
        Paragraph(
            f'<font size="6.5" color="#5b6474">{_escape(f.label)}</font><br/>'
            f"<b>{_escape(display(f.value, f.kind))}</b>",
            styles["cell"],
        )
        for f in section.facts
    ]
    per_row = 4
    rows = [cells[i : i + per_row] for i in range(0, len(cells), per_row)]
    rows[-1] += [""] * (per_row - len(rows[-1]))
    grid = PdfTable(rows, colWidths=[WIDTH / per_row] * per_row)
    grid.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("BOTTOMPADDING", (0, 0), (-1, -1), 3)]))
    return grid


def _table(table: Table, styles: dict[str, ParagraphStyle]) -> list[Any]:
    flow: list[Any] = [Paragraph(_escape(table.title), styles["h3"])]
    if not table.rows:
        flow.append(Paragraph("<i>None in this period.</i>", styles["note"]))
    else:
        header = [Paragraph(f"<b>{_escape(c.title)}</b>", styles["cell"]) for c in table.columns]
        body = [
            [_cell(value, c.kind, styles) for c, value in zip(table.columns, row, strict=True)] for row in table.rows
        ]
        grid = PdfTable([header, *body], colWidths=_widths(table), repeatRows=1, hAlign="LEFT")
        numeric = [i for i, c in enumerate(table.columns) if c.kind in ("int", "usd", "percent")]
        style = [
            ("FONT", (0, 0), (-1, -1), "Helvetica", 6.5),
            ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#f0f2f5")),
            ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.HexColor("#dde1e7")),
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ("TOPPADDING", (0, 0), (-1, -1), 1.5),
            ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
            *[("ALIGN", (i, 1), (i, -1), "RIGHT") for i in numeric],
        ]
        grid.setStyle(TableStyle(style))
        flow.append(grid)
    if table.note:
        flow.append(Paragraph(_escape(table.note), styles["note"]))
    return flow


def _widths(table: Table) -> list[float]:
    """Column widths from the longest text in each (6.5 pt Helvetica: about 3.4 pt a character), fitted to the page."""
    widths = []
    for index, column in enumerate(table.columns):
        longest = max([len(column.title)] + [len(display(row[index], column.kind)) for row in table.rows[:200]])
        widths.append(min(longest, 48) * 3.4 + 8)
    scale = min(1.0, WIDTH / sum(widths))
    return [w * scale for w in widths]


def _cell(value: Any, kind: str, styles: dict[str, ParagraphStyle]) -> Any:
    text = display(value, kind)  # type: ignore[arg-type]
    return Paragraph(_escape(text), styles["cell"]) if len(text) > WRAP_AT else text
