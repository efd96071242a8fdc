"""The one JSON codec of the gateway (orjson): every body is parsed and serialised here."""

from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


def loads_object(data: bytes | str) -> dict[str, Any] | None:
    """The JSON object in `data`; None when it is not JSON, or JSON but not an object (passed through as is)."""
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def dumps_pretty(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)


def dumps_canonical(obj: Any) -> bytes:
    """Compact, keys sorted: the same value always gives the same bytes (what a hash is taken over)."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def dumps_lenient(obj: Any) -> bytes:
    """Like dumps, for database values: any other type (Decimal, IP address...) as its str, non-str keys allowed."""
    return orjson.dumps(obj, default=str, option=orjson.OPT_NON_STR_KEYS)
