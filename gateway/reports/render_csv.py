"""The report as one CSV file for tools, in long form: one line per value, whatever the section.

    section,table,row,column,value
    period,facts,1,requests,1234
    requests,by_team,1,team,finance
    requests,by_team,1,requests,1000

`table` is `facts` for a section's facts (`row` 1, `column` the fact id) or a table id; `row` counts from 1
within a table; `column` is the column id; `value` is the raw value (dollars as exact decimals, times as ISO
8601 UTC, booleans as true/false, empty for none). One file with a `section` column rather than a zip of CSVs:
one file to sign, and a pivot (or `csv.DictReader` and a filter) gives any table back. Charts are not
repeated: their data are in the tables.
"""

import csv
import io
from typing import Any

from gateway.reports.model import Report

HEADER = ("section", "table", "row", "column", "value")


def _value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render(report: Report) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(
        [
            ("report", "facts", 1, "start", report.start),
            ("report", "facts", 1, "end", report.end),
            ("report", "facts", 1, "generated_at", report.generated_at),
            ("report", "facts", 1, "team", _value(report.filters.get("team"))),
        ]
    )
    for section in report.sections:
        for fact in section.facts:
            writer.writerow((section.id, "facts", 1, fact.id, _value(fact.value)))
        for table in section.tables:
            for number, row in enumerate(table.rows, 1):
                for column, value in zip(table.columns, row, strict=True):
                    writer.writerow((section.id, table.id, number, column.id, _value(value)))
    return out.getvalue().encode()
