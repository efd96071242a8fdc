"""The report's charts as reportlab drawings: drawn into the PDF as they are, and into the HTML as inline SVG
(reportlab's SVG renderer), so both formats show the same charts from one definition.

    drawing(chart, width) -> Drawing
    svg(chart, width, ident) -> str      an <svg> element to inline (no XML prolog, ids made unique)
"""

import re

from reportlab.graphics import renderSVG
from reportlab.graphics.charts.barcharts import HorizontalBarChart, VerticalBarChart
from reportlab.graphics.charts.legends import Legend
from reportlab.graphics.shapes import Drawing, String
from reportlab.lib import colors

from gateway.reports.model import Chart

PALETTE = ("#2f6db5", "#e0a030", "#c0392b", "#7f8c8d", "#8e44ad", "#27ae60", "#16a085")
STATUS_COLOURS = {"2xx/3xx": "#3c8d5a", "4xx": "#e0a030", "429": "#8e44ad", "5xx": "#c0392b", "none": "#7f8c8d"}
BAR_HEIGHT = 14
FONT = "Helvetica"


def _colour(name: str, index: int) -> colors.Color:
    return colors.HexColor(STATUS_COLOURS.get(name, PALETTE[index % len(PALETTE)]))


def drawing(chart: Chart, width: float = 480) -> Drawing:
    if chart.kind == "hbar":
        return _horizontal(chart, width)
    return _vertical(chart, width)


def _title(d: Drawing, chart: Chart, width: float, height: float) -> None:
    d.add(String(0, height - 12, chart.title, fontName=FONT + "-Bold", fontSize=10, fillColor=colors.HexColor("#222")))


def _vertical(chart: Chart, width: float) -> Drawing:
    height = 190
    d = Drawing(width, height)
    _title(d, chart, width, height)
    bars = VerticalBarChart()
    bars.x, bars.y, bars.width, bars.height = 48, 30, width - 60 - (80 if len(chart.series) > 1 else 0), height - 60
    bars.data = [list(s.values) or [0] for s in chart.series]
    bars.categoryAxis.categoryNames = list(chart.categories) or [""]
    bars.categoryAxis.labels.fontName, bars.categoryAxis.labels.fontSize = FONT, 6
    bars.categoryAxis.labels.angle, bars.categoryAxis.labels.boxAnchor = 90, "e"
    bars.valueAxis.labels.fontName, bars.valueAxis.labels.fontSize = FONT, 7
    bars.valueAxis.valueMin = 0
    bars.valueAxis.forceZero = 1
    bars.barSpacing, bars.groupSpacing = 0, 1
    bars.bars.strokeWidth = 0
    if chart.kind == "stacked":
        bars.categoryAxis.style = "stacked"
    for index, series in enumerate(chart.series):
        bars.bars[index].fillColor = _colour(series.name, index)
    d.add(bars)
    if len(chart.series) > 1:
        legend = Legend()
        legend.x, legend.y = width - 70, height - 40
        legend.fontName, legend.fontSize, legend.dy = FONT, 7, 7
        legend.colorNamePairs = [(_colour(s.name, i), s.name) for i, s in enumerate(chart.series)]
        d.add(legend)
    return d


def _horizontal(chart: Chart, width: float) -> Drawing:
    count = max(len(chart.categories), 1)
    height = 30 + count * BAR_HEIGHT + 20
    d = Drawing(width, height)
    _title(d, chart, width, height)
    label_width = min(220, max(60, 5 * max((len(c) for c in chart.categories), default=8)))
    bars = HorizontalBarChart()
    bars.x, bars.y, bars.width, bars.height = label_width + 8, 20, width - label_width - 40, count * BAR_HEIGHT
    bars.data = [list(reversed(s.values)) or [0] for s in chart.series]
    bars.categoryAxis.categoryNames = list(reversed(chart.categories)) or [""]
    bars.categoryAxis.labels.fontName, bars.categoryAxis.labels.fontSize = FONT, 7
    bars.valueAxis.labels.fontName, bars.valueAxis.labels.fontSize = FONT, 7
    bars.valueAxis.valueMin = 0
    bars.valueAxis.forceZero = 1
    bars.bars.strokeWidth = 0
    bars.barLabelFormat = _label
    bars.barLabels.fontName, bars.barLabels.fontSize = FONT, 6
    bars.barLabels.boxAnchor, bars.barLabels.dx = "w", 3
    for index, series in enumerate(chart.series):
        bars.bars[index].fillColor = _colour(series.name, index)
    d.add(bars)
    return d


def _label(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 or float(value).is_integer() else f"{value:,.2f}"


_PROLOG = re.compile(r"\A.*?(?=<svg)", re.S)


def svg(chart: Chart, width: float, ident: str) -> str:
    """The chart as one <svg> element for inlining in HTML, its ids prefixed with `ident`."""
    text = renderSVG.drawToString(drawing(chart, width))
    text = _PROLOG.sub("", text)
    text = re.sub(r'id="([^"]+)"', lambda m: f'id="{ident}-{m.group(1)}"', text)
    text = re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{ident}-{m.group(1)})", text)
    return text.replace("<title>...</title>", f"<title>{_escape(chart.title)}</title>").replace("<desc>...</desc>", "")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
