"""An audit event (a dict of any version, from the spool) → the values of the event columns, typed as
ClickHouse stores them, so that a row hashes the same when it is written and when it is read back.

    to_row(event) -> dict      missing or unusable fields get the column's default, unknown keys are ignored
    parse_time(value)          an ISO string, a datetime or epoch seconds → aware UTC, cut to the millisecond
"""

import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, cast

from gateway import codec
from gateway.audit.schema import EVENT_COLUMNS, Column

_EVENT_ID_NAMESPACE = uuid.UUID("5f0c7a36-52d4-4c1e-9a53-4f8f2a0c1b7e")  # ids for events that came without one


def to_row(event: Mapping[str, Any]) -> dict[str, Any]:
    """An event dict (of any version) → the values of the event columns, typed as ClickHouse stores them.

    Missing or unusable fields get the column's default, unknown keys are ignored; timestamps are cut to the
    millisecond and floats kept finite, so the row hashes the same when it is read back.
    """
    get, row = event.get, {}
    for name, fast, top, normalise, column in _ROW_PLAN:
        value = get(name)
        if type(value) is fast and (top is None or 0 <= cast(int, value) <= top):  # the common case, cheaply
            row[name] = value
        else:
            row[name] = normalise(value, column)
    if row["event_id"] is None:
        row["event_id"] = _derived_id(event)
    if row["ts"] is None:  # never 1970: the TTL would drop the row at once and leave a gap in the chain
        row["ts"] = row["ended"] or parse_time(datetime.now(UTC))
    if row["ended"] is None:
        row["ended"] = row["ts"]
    return row


def _derived_id(event: Mapping[str, Any]) -> uuid.UUID:
    """A stable id for an event without a valid one, so that its replay is still recognised."""
    try:
        text = codec.dumps_pretty(dict(event)).decode()
    except TypeError:
        text = repr(sorted(event.items(), key=lambda item: str(item[0])))
    return uuid.uuid5(_EVENT_ID_NAMESPACE, text)


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


def _uuid(value: Any, column: Column) -> uuid.UUID | None:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _time(value: Any, column: Column) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except (ValueError, TypeError, OverflowError, OSError):
        return None


def _str(value: Any, column: Column) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def _int(value: Any, column: Column) -> int:
    try:
        number = int(value or 0)
    except (ValueError, TypeError, OverflowError):
        return 0
    return min(max(number, 0), column.max)


def _bool(value: Any, column: Column) -> bool:
    return bool(value)


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
_NORMALISE = {
    "uuid": _uuid,
    "time": _time,
    "str": _str,
    "int": _int,
    "bool": _bool,
    "float": _float,
    "nullable_float": _nullable_float,
    "list": _list,
}
_FAST_TYPE: dict[str, type] = {"str": str, "bool": bool, "int": int}  # a value of this type is already normalised
_ROW_PLAN: tuple[tuple[str, type | None, int | None, Callable[[Any, Column], Any], Column], ...] = tuple(
    (c.name, _FAST_TYPE.get(c.kind), c.max if c.kind == "int" else None, _NORMALISE[c.kind], c) for c in EVENT_COLUMNS
)
