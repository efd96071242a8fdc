"""Audit events (dicts of any version, from the spool) → the values of the event columns, typed as ClickHouse
stores them, so that a row hashes the same when it is written and when it is read back.

    to_columns(events) -> dict   a batch, column by column (what the store chains and inserts): event_id as
                                 its canonical text, times as epoch milliseconds
    to_row(event) -> dict        one event (event_id a UUID, times aware UTC datetimes), the same normalisation
    to_table(columns)            every column of audit_events (chain columns included) → the Arrow table the
                                 store inserts: built in C by pyarrow, read in C++ by ClickHouse
    parse_time(value)            an ISO string, a datetime or epoch seconds → aware UTC, cut to the millisecond

Missing or unusable fields get the column's default and unknown keys are ignored. The batch is normalised a
column at a time: a column whose values all have the column's type already (the events this gateway writes)
is checked in a few C-level passes and kept as it is; only a column holding something else is converted value
by value, by the very converters that define the result.
"""

import math
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from itertools import chain
from operator import itemgetter
from typing import Any

import pyarrow as pa

from gateway import codec
from gateway.audit.schema import CHAIN_COLUMNS, EVENT_COLUMNS, EVENT_NAMES, Column

_EVENT_ID_NAMESPACE = uuid.UUID("5f0c7a36-52d4-4c1e-9a53-4f8f2a0c1b7e")  # ids for events that came without one
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_UUID_TEXT = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"  # what str(uuid.UUID) gives
_CANONICAL_UUID = re.compile(_UUID_TEXT)
_CANONICAL_UUID_LINES = re.compile(rf"(?:{_UUID_TEXT}\n)*{_UUID_TEXT}")
_ALL_FIELDS = itemgetter(*EVENT_NAMES)


def to_columns(events: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """A batch of event dicts → {column name: values, one per event}, in EVENT_NAMES order.

    event_id is the canonical text of a UUID (an event without a valid one gets a stable id derived from its
    content), ts and ended are epoch milliseconds (a missing one is the other, or now).
    """
    if not events:
        return {name: [] for name in EVENT_NAMES}
    try:
        values = list(map(_ALL_FIELDS, events))
    except KeyError:  # an event of another version: the missing fields are None
        values = [tuple(map(event.get, EVENT_NAMES)) for event in events]
    columns = {
        column.name: _NORMALISE_COLUMN[column.kind](list(raw), column)
        for column, raw in zip(EVENT_COLUMNS, zip(*values, strict=True), strict=True)
    }
    _fill_gaps(columns, events)
    return columns


def to_row(event: Mapping[str, Any]) -> dict[str, Any]:
    """One event dict → the values of the event columns: event_id a UUID, ts and ended aware UTC datetimes."""
    row = {name: values[0] for name, values in to_columns([event]).items()}
    row["event_id"] = uuid.UUID(row["event_id"])
    row["ts"], row["ended"] = _EPOCH + row["ts"] * _MS, _EPOCH + row["ended"] * _MS
    return row


def to_table(columns: Mapping[str, Sequence[Any]]) -> pa.Table:
    """{column name: values} for every column of audit_events → an Arrow table of the columns' types."""
    return pa.Table.from_arrays([pa.array(columns[f.name], f.type) for f in _ARROW], schema=_ARROW)


def parse_time(value: Any) -> datetime:
    """An ISO string, a datetime (naive means UTC) or epoch seconds → an aware UTC datetime cut to the ms."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        moment = datetime.fromtimestamp(value, UTC)
    else:
        moment = datetime.fromisoformat(str(value))
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _fill_gaps(columns: dict[str, list[Any]], events: Sequence[Mapping[str, Any]]) -> None:
    """Ids and times that were missing or unusable: derived, never left empty."""
    ids, starts, ends = columns["event_id"], columns["ts"], columns["ended"]
    if None in ids:
        columns["event_id"] = [_derived_id(e) if i is None else i for i, e in zip(ids, events, strict=True)]
    if None in starts:  # never 1970: the TTL would drop the row at once and leave a gap in the chain
        now = _ms(datetime.now(UTC))
        starts = [(now if e is None else e) if s is None else s for s, e in zip(starts, ends, strict=True)]
        columns["ts"] = starts
    if None in ends:
        columns["ended"] = [s if e is None else e for s, e in zip(starts, ends, strict=True)]


def _derived_id(event: Mapping[str, Any]) -> str:
    """A stable id for an event without a valid one, so that its replay is still recognised."""
    try:
        text = codec.dumps_pretty(dict(event)).decode()
    except TypeError:
        text = repr(sorted(event.items(), key=lambda item: str(item[0])))
    return str(uuid.uuid5(_EVENT_ID_NAMESPACE, text))


# one value → its normalised form (what a column that is not all of one type already goes through)


def _uuid(value: Any, column: Column) -> str | None:
    if isinstance(value, uuid.UUID):
        return str(value)
    if type(value) is str and _CANONICAL_UUID.fullmatch(value):
        return value
    try:
        return str(uuid.UUID(value)) if isinstance(value, str) else None
    except ValueError:
        return None


def _time(value: Any, column: Column) -> int | None:
    if value is None:
        return None
    try:
        if type(value) is str:  # the usual ISO text, parsed straight to milliseconds
            moment = datetime.fromisoformat(value)
            return _ms(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
        return _ms(parse_time(value))
    except (ValueError, TypeError, OverflowError, OSError):
        return None


def _ms(moment: datetime) -> int:
    """An aware datetime → epoch milliseconds, cut (floored) to the millisecond as parse_time cuts it."""
    return (moment - _EPOCH) // _MS


def _str(value: Any, column: Column) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def _int(value: Any, column: Column) -> int:
    if type(value) is int and 0 <= value <= column.max:
        return value
    try:
        number = int(value or 0)
    except (ValueError, TypeError, OverflowError):
        return 0
    return min(max(number, 0), column.max)


def _float(value: Any, column: Column) -> float:
    try:
        number = float(value or 0.0)
    except (ValueError, TypeError):
        return 0.0
    return number if number - number == 0.0 else 0.0  # NaN and infinities → 0


def _nullable_float(value: Any, column: Column) -> float | None:
    return None if value is None else _float(value, column)


def _list(value: Any, column: Column) -> list[tuple[Any, ...]]:
    if not isinstance(value, list | tuple):
        return []
    return [_item(item, column.fields) for item in value if isinstance(item, Mapping)]


def _item(item: Mapping[str, Any], fields: tuple[str, ...]) -> tuple[Any, ...]:
    values = tuple(map(item.get, fields))
    if "count" not in fields and all(type(v) is str for v in values):
        return values
    return tuple(_int(v, _COUNT) if f == "count" else _str(v, _COUNT) for f, v in zip(fields, values, strict=True))


_COUNT = Column("count", "UInt32", "int", "", max=2**32 - 1)

# a whole column → its normalised values: kept as they are when all already have the column's type


def _only(values: Iterable[Any], *types: type) -> bool:
    return set(map(type, values)).issubset(types)


def _uuid_column(values: list[Any], column: Column) -> list[Any]:
    """Canonical UUID texts are checked by one regex over all of them, one per line."""
    if _only(values, str):
        lines = "\n".join(values)
        if lines.count("\n") == len(values) - 1 and _CANONICAL_UUID_LINES.fullmatch(lines):
            return values
    return [_uuid(value, column) for value in values]


def _time_column(values: list[Any], column: Column) -> list[Any]:
    """ISO texts with a UTC offset straight to milliseconds; anything else (a naive time too) value by value."""
    try:
        return [(datetime.fromisoformat(value) - _EPOCH) // _MS for value in values]
    except (TypeError, ValueError, OverflowError):
        return [_time(value, column) for value in values]


def _str_column(values: list[Any], column: Column) -> list[Any]:
    return values if _only(values, str) else [_str(value, column) for value in values]


def _int_column(values: list[Any], column: Column) -> list[Any]:
    if _only(values, int) and min(values) >= 0 and max(values) <= column.max:
        return values
    return [_int(value, column) for value in values]


def _bool_column(values: list[Any], column: Column) -> list[Any]:
    return values if _only(values, bool) else [bool(value) for value in values]


def _float_column(values: list[Any], column: Column) -> list[Any]:
    if _only(values, float) and math.isfinite(sum(values)):  # a NaN or an infinity makes the sum one
        return [value or 0.0 for value in values] if 0.0 in values else values  # -0.0 → 0.0, as _float
    return [_float(value, column) for value in values]


def _nullable_float_column(values: list[Any], column: Column) -> list[Any]:
    if _only(values, float, type(None)) and math.isfinite(sum(value for value in values if value is not None)):
        return [value if value is None else value or 0.0 for value in values] if 0.0 in values else values
    return [_nullable_float(value, column) for value in values]


def _list_column(values: list[Any], column: Column) -> list[Any]:
    """Lists of dicts with every field, all of them text (decisions): one itemgetter per item; else item by item."""
    if "count" not in column.fields and len(column.fields) > 1:
        fields = itemgetter(*column.fields)
        try:
            items = [[fields(item) for item in value] if value else [] for value in values]
        except (KeyError, TypeError, IndexError):  # not a list of dicts with every field
            pass
        else:
            if _only(chain.from_iterable(chain.from_iterable(items)), str):
                return items
    return [_list(value, column) for value in values]


_NORMALISE_COLUMN: dict[str, Callable[[list[Any], Column], list[Any]]] = {
    "uuid": _uuid_column,
    "time": _time_column,
    "str": _str_column,
    "int": _int_column,
    "bool": _bool_column,
    "float": _float_column,
    "nullable_float": _nullable_float_column,
    "list": _list_column,
}


# the Arrow type of each column: ClickHouse casts text to UUID and to LowCardinality(String) as it reads

_ARROW_INTS = {"UInt8": pa.uint8(), "UInt16": pa.uint16(), "UInt32": pa.uint32(), "UInt64": pa.uint64()}
_ARROW_TYPES = {
    "uuid": pa.string(),
    "time": pa.timestamp("ms", tz="UTC"),
    "str": pa.string(),
    "bool": pa.bool_(),
    "float": pa.float64(),
    "nullable_float": pa.float64(),
}


def _arrow_type(column: Column) -> pa.DataType:
    if column.kind == "int":
        return _ARROW_INTS[column.type.split()[0]]
    if column.kind == "list":  # as _item makes them: "count" an integer, every other field text
        return pa.list_(pa.struct([(f, pa.uint32() if f == "count" else pa.string()) for f in column.fields]))
    return _ARROW_TYPES[column.kind]


_ARROW = pa.schema([(c.name, _arrow_type(c)) for c in EVENT_COLUMNS + CHAIN_COLUMNS])
