"""The compliance report as data: a frozen tree that every renderer (HTML, PDF, CSV, JSON) reads.

    Report(title, period, generated_at, filters, source, sections)
      Section(id, title, status, summary, facts, tables, charts)
        Fact(id, label, value, kind)                 one value: a count, a time, an amount, a verdict
        Table(id, title, columns, rows, note)        rows are tuples, one value per Column(id, title, kind)
        Chart(id, title, kind, categories, series)   bar | stacked | hbar; series are Series(name, values)

Values are plain: int, float, str, bool, None, `Decimal` for US dollars (exact, from integer micro-dollars),
and times as ISO 8601 UTC strings ending in Z. `kind` tells a renderer how to show a value:
text, int, usd, percent, time, bool, revision. JSON (`to_json`) gives each table's rows as objects keyed by
column id, which is what tools read; its layout is `REPORT_VERSION`.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from gateway import codec

REPORT_VERSION = 1
Kind = Literal["text", "int", "usd", "percent", "time", "bool", "revision"]
Status = Literal["ok", "attention", "info"]
MICRO = Decimal(1_000_000)


def usd(micro: int | None) -> Decimal:
    """Integer micro-dollars as exact dollars (6 decimals)."""
    return (Decimal(int(micro or 0)) / MICRO).quantize(Decimal("0.000001"))


def iso(ms: int | None) -> str | None:
    """Epoch milliseconds as ISO 8601 UTC with milliseconds and Z."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def iso_moment(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Column:
    id: str
    title: str
    kind: Kind = "text"


@dataclass(frozen=True)
class Table:
    id: str
    title: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[Any, ...], ...]
    note: str = ""

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip((c.id for c in self.columns), row, strict=True)) for row in self.rows]


@dataclass(frozen=True)
class Fact:
    id: str
    label: str
    value: Any
    kind: Kind = "text"


@dataclass(frozen=True)
class Series:
    name: str
    values: tuple[float, ...]


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    kind: Literal["bar", "stacked", "hbar"]
    categories: tuple[str, ...]
    series: tuple[Series, ...]
    unit: str = ""


@dataclass(frozen=True)
class Section:
    id: str
    title: str
    status: Status = "info"
    summary: str = ""
    facts: tuple[Fact, ...] = ()
    tables: tuple[Table, ...] = ()
    charts: tuple[Chart, ...] = ()

    def fact(self, fact_id: str) -> Any:
        return next(f.value for f in self.facts if f.id == fact_id)

    def table(self, table_id: str) -> Table:
        return next(t for t in self.tables if t.id == table_id)


@dataclass(frozen=True)
class Report:
    title: str
    start: str
    end: str
    generated_at: str
    filters: dict[str, str | None]
    source: dict[str, str]
    sections: tuple[Section, ...] = field(default=())

    def section(self, section_id: str) -> Section:
        return next(s for s in self.sections if s.id == section_id)


def to_dict(report: Report) -> dict[str, Any]:
    """The report as JSON values (the layout tools read)."""
    return {
        "report": "compliance",
        "version": REPORT_VERSION,
        "title": report.title,
        "period": {"start": report.start, "end": report.end, "end_excluded": True},
        "generated_at": report.generated_at,
        "filters": report.filters,
        "source": report.source,
        "sections": [_section(s) for s in report.sections],
    }


def _section(section: Section) -> dict[str, Any]:
    return {
        "id": section.id,
        "title": section.title,
        "status": section.status,
        "summary": section.summary,
        "facts": {f.id: {"label": f.label, "value": f.value, "kind": f.kind} for f in section.facts},
        "tables": {
            t.id: {
                "title": t.title,
                "columns": [{"id": c.id, "title": c.title, "kind": c.kind} for c in t.columns],
                "rows": t.records(),
                "note": t.note,
            }
            for t in section.tables
        },
        "charts": {
            c.id: {
                "title": c.title,
                "kind": c.kind,
                "unit": c.unit,
                "categories": list(c.categories),
                "series": [{"name": s.name, "values": list(s.values)} for s in c.series],
            }
            for c in section.charts
        },
    }


def to_json(report: Report) -> bytes:
    """The JSON file: sorted keys, indented, dollars as exact decimal strings ("12.345678")."""
    return codec.dumps_pretty(codec.loads(codec.dumps_lenient(to_dict(report)))) + b"\n"


def display(value: Any, kind: Kind = "text") -> str:
    """A value as a person reads it in the HTML and PDF reports."""
    if value is None:
        return "—"
    if kind == "bool" or isinstance(value, bool):
        return "yes" if value else "no"
    if kind == "usd":
        amount = Decimal(value)
        return f"{amount:,.2f}" if amount == 0 or abs(amount) >= 1 else f"{amount.normalize():f}"
    if kind == "percent":
        return f"{value:,.2f}".rstrip("0").rstrip(".") + " %"
    if kind == "time" and isinstance(value, str):
        return value.replace("T", " ").replace(".000Z", "Z").replace("+00:00", "Z").replace("Z", " UTC")
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
