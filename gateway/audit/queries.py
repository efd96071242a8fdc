"""What operators look up in the audit store: events by filter (`query`) and the newest ones (`tail`).

A mixin of gateway.audit.store.AuditStore (it needs the store's `client` and `events` table); rows come back as
the event dicts they were made from, times in ISO UTC, plus `seq` and `hash`.
"""

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from gateway.audit import schema
from gateway.audit.chain import epoch_ms, iso_ms
from gateway.audit.schema import EVENT_NAMES

ROW_COLUMNS = ", ".join(("seq", "prev_hash", "hash", *EVENT_NAMES))


class OperatorQueries:
    client: Any
    events: str

    def query(
        self,
        team: str | None = None,
        key_id: str | None = None,
        model: str | None = None,
        status: int | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int = 100,
        event_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """The newest events matching every filter given (model: requested or served), newest first."""
        where, parameters = time_filter("ts", start, end)
        for column, value in (("team", team), ("key_id", key_id), ("status", status)):
            if value is not None:
                where += f" AND {column} = {{{column}:{'UInt16' if column == 'status' else 'String'}}}"
                parameters[column] = value
        if model is not None:
            where += " AND (model_requested = {model:String} OR model_served = {model:String})"
            parameters["model"] = model
        if event_id is not None:  # not a UUID: matches nothing
            where += " AND event_id = toUUIDOrZero({event_id:String})"
            parameters["event_id"] = event_id
        parameters["limit"] = max(int(limit), 0)
        return self._events(f"WHERE {where} ORDER BY ts DESC, seq DESC LIMIT {{limit:UInt64}}", parameters)

    def tail(self, n: int = 20) -> list[dict[str, Any]]:
        """The last n events written, oldest first."""
        return self._events("ORDER BY ended DESC, seq DESC LIMIT {n:UInt64}", {"n": max(int(n), 0)})[::-1]

    def _events(self, clause: str, parameters: Mapping[str, Any]) -> list[dict[str, Any]]:
        result = self.client.query(f"SELECT {ROW_COLUMNS} FROM {self.events} {clause}", parameters=dict(parameters))
        return [_to_event(row) for row in result.result_rows]


def time_filter(column: str, start: datetime | None, end: datetime | None) -> tuple[str, dict[str, Any]]:
    """`start <= column < end` as SQL with parameters (either may be None; naive datetimes are UTC)."""
    where, parameters = "1", {}
    if start is not None:
        where += f" AND {column} >= fromUnixTimestamp64Milli({{start:Int64}})"
        parameters["start"] = epoch_ms(start)
    if end is not None:
        where += f" AND {column} < fromUnixTimestamp64Milli({{end:Int64}})"
        parameters["end"] = epoch_ms(end)
    return where, parameters


def _to_event(row: Sequence[Any]) -> dict[str, Any]:
    """A row read back → the event dict it was made from (times in ISO UTC), plus seq and hash."""
    event = dict(zip(EVENT_NAMES, row[3:], strict=True))
    event["event_id"] = str(event["event_id"])
    event["ts"], event["ended"] = iso_ms(epoch_ms(event["ts"])), iso_ms(epoch_ms(event["ended"]))
    event["decisions"] = [_item(d, schema.DECISION_FIELDS) for d in event["decisions"]]
    event["pii"] = [_item(p, schema.PII_FIELDS) for p in event["pii"]]
    event["seq"], event["hash"] = row[0], row[2]
    return event


def _item(value: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else dict(zip(fields, value, strict=True))
