"""The canonical bytes of an audit row: what the hash chain hashes (gateway.audit.chain), in one place.

Canonical is JSON with sorted keys (orjson) of the event columns whose value is not the column's default, each
value as ClickHouse gives it back: times as epoch milliseconds, UUIDs as text, floats as float64, tuples as
lists. Leaving defaults out means a column added by a later migration (old rows read it back as its default)
changes no existing row's hash. A row's values may come as the store inserts them (gateway.audit.rows: ids as
text, times as epoch ms, list items as tuples) or as clickhouse-connect reads them back (UUIDs, naive UTC
datetimes, named tuples as dicts): both give the same bytes.

    canonical_rows(columns) -> list[bytes]   a batch given column by column: the insert, and verify's pages
    canonical(values) -> bytes               one row given in EVENT_NAMES order: canonical_rows of one row

A batch is encoded a column at a time: a column none of whose values is a default is kept whole, and a column
whose values are all of the canonical type already (text ids, integer times) is not converted.
"""

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import repeat
from typing import Any

from gateway import codec
from gateway.audit.schema import EVENT_COLUMNS

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_MS = timedelta(milliseconds=1)
_ABSENT = object()  # a value left out of its row's document: None or the column's default
_NO_DEFAULT = object()  # uuid and time columns always have a value


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since the epoch; a naive datetime is UTC (what clickhouse-connect returns by default)."""
    return (moment - (_NAIVE_EPOCH if moment.tzinfo is None else _EPOCH)) // _MS


def canonical_rows(columns: Sequence[Sequence[Any]]) -> list[bytes]:
    """The canonical encoding of each row of a batch given as columns, in EVENT_NAMES order."""
    if len(columns) != len(_PLAN):
        raise ValueError(f"{len(columns)} columns given, the event columns are {len(_PLAN)}")
    count = len(columns[0]) if columns else 0
    names: list[str] = []  # in sorted order: orjson then writes the keys sorted without sorting them
    present: list[Sequence[Any]] = []
    partial: list[tuple[str, Sequence[Any]]] = []  # columns absent from some rows (_ABSENT there)
    for name, at, plan in _PLAN:
        encoded, found = plan.column(columns[at])
        if found:
            names.append(name)
            present.append(encoded)
        if 0 < found < count:
            partial.append((name, encoded))
    rows: Iterable[tuple[Any, ...]] = zip(*present, strict=True) if present else repeat((), count)
    docs = [dict(zip(names, row, strict=True)) for row in rows]
    for name, values in partial:
        for at in [at for at, value in enumerate(values) if value is _ABSENT]:
            del docs[at][name]
    return list(map(codec.dumps, docs))


def canonical(values: Sequence[Any]) -> bytes:
    """The canonical encoding of one row's event columns, given in EVENT_NAMES order."""
    return canonical_rows([[value] for value in values])[0]


@dataclass(frozen=True)
class _Column:
    """How one column's values are encoded: `value` converts one, values of type `ready` are canonical as they are."""

    value: Callable[[Any], Any] | None
    ready: type | None
    default: Any

    def column(self, values: Sequence[Any]) -> tuple[Sequence[Any], int]:
        """The encoded values (_ABSENT for a None or a default) and how many are present."""
        default, convert = self.default, self.value
        if None in values or (default is not _NO_DEFAULT and default in values):
            encoded = [
                _ABSENT if value is None or value == default else value if convert is None else convert(value)
                for value in values
            ]
            return encoded, len(encoded) - encoded.count(_ABSENT)
        if convert is None or (self.ready is not None and set(map(type, values)) == {self.ready}):
            return values, len(values)
        return list(map(convert, values)), len(values)


def _time(value: Any) -> int:
    return value if type(value) is int else epoch_ms(value)


def _list(fields: tuple[str, ...]) -> Callable[[Any], Any]:
    """Tuples (as inserted) are arrays to orjson already; named tuples read back come as dicts: list them."""

    def canon(value: list[Any]) -> Any:
        if isinstance(value[0], tuple):
            return value
        return [[item[f] for f in fields] if isinstance(item, dict) else list(item) for item in value]

    return canon


def _plan(kind: str, fields: tuple[str, ...]) -> _Column:
    if kind == "uuid":
        return _Column(str, str, _NO_DEFAULT)
    if kind == "time":
        return _Column(_time, int, _NO_DEFAULT)
    if kind == "float":
        return _Column(float, float, 0.0)
    if kind == "nullable_float":
        return _Column(float, float, _NO_DEFAULT)
    if kind == "list":
        return _Column(_list(fields), None, [])
    return _Column(None, None, {"str": "", "int": 0, "bool": False}[kind])


_PLAN = tuple(sorted((c.name, at, _plan(c.kind, c.fields)) for at, c in enumerate(EVENT_COLUMNS)))
