"""Expands a Grafana panel's SQL the way Grafana and the ClickHouse datasource plugin do, so tests can run it.

Grafana itself is not installed in CI; the dashboards' queries are run against the real schema instead, after
this module has done what Grafana would have sent. The rules are taken from the sources, not guessed:

1. The plugin's frontend (grafana/clickhouse-datasource v4, `Datasource.applyTemplateVariables` and
   `applyConditionalAll` in src/data/CHDatasource.ts):
   - `$__conditionalAll(condition, $var)` first, from the last one back: it becomes `1=1` when the variable's
     current value is All (`$__all`) or empty, else the condition. The arguments are split at commas at depth
     1 (`getMacroArgs`); the variable is read from the second argument as `$name` or `${name}` only.
   - then Grafana's template service replaces `$var`, `${var}`, `${var:format}` and `[[var]]` with the
     plugin's format function: a multi-value (an array) becomes `'a','b'` (not escaped), a single value is
     written as is. Named formats (`singlequote`, `sqlstring`, ...) are Grafana's own; All without a custom
     all value stands for every option's value; a custom all value is written as is, unformatted.
     Grafana's global variables `$__interval`, `$__interval_ms`, `$__from`, `$__to`, `$__range*` are
     replaced here too; any other `$__name` is left for the backend.
2. The plugin's backend (pkg/macros/macros.go), applied by the plugin SDK's `sqlutil.Interpolate`
   (grafana/grafana-plugin-sdk-go data/sqlutil/macros.go): macro names longest first, each found as
   `\\$__name\\b` followed by an optional bracketed argument list (split at commas at depth 1, each trimmed),
   every occurrence replaced:
       $__timeFilter(c)     c >= toDateTime(<from s>) AND c <= toDateTime(<to s>)
       $__timeFilter_ms(c)  c >= fromUnixTimestamp64Milli(<from ms>) AND c <= fromUnixTimestamp64Milli(<to ms>)
       $__dateFilter(c)     c >= toDate('<from date>') AND c <= toDate('<to date>')
       $__dateTimeFilter(d, t) / $__dt(d, t)   both of the above, each in brackets, joined by AND
       $__fromTime / $__toTime                 toDateTime(<s>)
       $__fromTime_ms / $__toTime_ms           fromUnixTimestamp64Milli(<ms>)
       $__timeInterval(c)     toStartOfInterval(toDateTime(c), INTERVAL <interval s, at least 1> second)
       $__timeInterval_ms(c)  toStartOfInterval(toDateTime64(c, 3), INTERVAL <interval ms, at least 1> millisecond)
       $__interval_s          <interval s, at least 1>
   The SDK's own defaults (`$__timeGroup`, `$__timeFrom`, `$__timeTo`, `$__table`, `$__column`) write SQL
   for other databases (datepart, RFC 3339 strings): they are refused here on purpose.

Whatever still looks like a macro or a variable afterwards raises UnknownMacro, so a panel cannot ship SQL
that Grafana would send half-expanded.
"""

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

ALL = "$__all"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Grafana's variable syntax (public/app/features/variables/utils.ts, variableRegex)
_VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^\}]+))?(?::([^\}]+))?\}")
_CONDITIONAL_ALL = "$__conditionalAll("
_CONDITIONAL_VARIABLE = re.compile(r"(?<=\$\{)\w+(?=\})|(?<=\$)\w+")
_LEFTOVER = re.compile(r"\$\{?\w+|\[\[\w+")


class UnknownMacro(ValueError):
    """The SQL uses a macro, variable or format that Grafana and the plugin would not expand."""


class MacroError(ValueError):
    """A known macro used wrongly (argument count, unclosed bracket): the plugin answers an error too."""


@dataclass(frozen=True)
class Variable:
    """A dashboard variable as Grafana holds it when the query runs."""

    name: str
    current: tuple[str, ...]  # the selected values; (ALL,) for All
    options: tuple[str, ...] = ()  # every value the variable offers, All excluded
    multi: bool = True
    all_value: str | None = None  # the variable's custom all value, if it has one

    def value(self) -> str | list[str]:
        """What the template service hands the format function."""
        if self.current == (ALL,):
            return self.all_value if self.all_value is not None else list(self.options)
        return list(self.current) if self.multi else self.current[0]


@dataclass(frozen=True)
class Request:
    """What a panel's query is run with: the time range, the interval and the variables."""

    start: datetime
    end: datetime
    interval: timedelta
    variables: Mapping[str, Variable]


def expand(sql: str, request: Request) -> str:
    """The SQL the plugin sends to ClickHouse for this panel SQL and request."""
    sql = apply_conditional_all(sql, request.variables)
    sql = replace_variables(sql, request)
    sql = interpolate_macros(sql, request)
    leftover = sorted(set(_LEFTOVER.findall(sql)))
    if leftover:
        raise UnknownMacro(f"not expanded by Grafana or the ClickHouse plugin: {', '.join(leftover)}")
    return sql


def apply_conditional_all(sql: str, variables: Mapping[str, Variable]) -> str:
    at = sql.rfind(_CONDITIONAL_ALL)
    while at != -1:
        args = _frontend_args(sql, at + len(_CONDITIONAL_ALL) - 1)
        if len(args) != 2:
            return sql
        phrase = args[0]
        found = _CONDITIONAL_VARIABLE.search(args[1].strip())
        variable = variables.get(found.group(0)) if found else None
        if variable is not None and ",".join(variable.current) in ("", ALL):
            phrase = "1=1"
        sql = sql.replace(f"{_CONDITIONAL_ALL}{args[0]},{args[1]})", phrase, 1)
        at = sql.rfind(_CONDITIONAL_ALL)
    return sql


def _frontend_args(sql: str, at: int) -> list[str]:
    """The plugin's getMacroArgs: the arguments of the bracket at `at`, untrimmed; [] if it never closes."""
    text, args, depth, start = sql[at:], [], 0, 1
    for found in re.finditer(r"[(),]", text):
        mark, end = found.group(0), found.end()
        depth += {"(": 1, ")": -1}.get(mark, 0)
        if mark == "," and depth == 1:
            args.append(text[start : end - 1])
            start = end
        if depth == 0:
            args.append(text[start : end - 1])
            return args
    return []


def replace_variables(sql: str, request: Request) -> str:
    builtins = _builtins(request)

    def replace(found: re.Match[str]) -> str:
        name = found.group(1) or found.group(2) or found.group(4)
        fmt = found.group(3) or found.group(6)
        if found.group(5):
            raise UnknownMacro(f"field paths of variables are not supported: {found.group(0)}")
        if name in builtins:
            if fmt is not None:
                raise UnknownMacro(f"a format on a global variable: {found.group(0)}")
            return builtins[name]
        variable = request.variables.get(name)
        if variable is None:
            return found.group(0)  # Grafana leaves unknown names; the backend may know them as macros
        value = variable.value()
        if variable.current == (ALL,) and variable.all_value is not None:
            return variable.all_value  # a custom all value skips formatting
        return _format(value, fmt)

    return _VARIABLE.sub(replace, sql)


def _builtins(request: Request) -> dict[str, str]:
    span = request.end - request.start
    return {
        "__interval": _interval_text(request.interval),
        "__interval_ms": str(_ms(request.interval)),
        "__from": str(_epoch_ms(request.start)),
        "__to": str(_epoch_ms(request.end)),
        "__range": _interval_text(span),
        "__range_s": str(_ms(span) // 1000),
        "__range_ms": str(_ms(span)),
    }


def _format(value: str | list[str], fmt: str | None) -> str:
    values = value if isinstance(value, list) else [value]
    if fmt is None:  # the plugin's own format function
        return "'" + "','".join(values) + "'" if isinstance(value, list) else value
    formats: dict[str, Callable[[str], str]] = {
        "singlequote": lambda v: "'" + v.replace("'", "\\'") + "'",
        "doublequote": lambda v: '"' + v.replace('"', '\\"') + '"',
        "sqlstring": lambda v: "'" + v.replace("'", "''") + "'",
        "csv": lambda v: v,
        "raw": lambda v: v,
    }
    if fmt == "pipe":
        return "|".join(values)
    if fmt not in formats:
        raise UnknownMacro(f"variable format not supported here: {fmt}")
    return ",".join(formats[fmt](v) for v in values)


def interpolate_macros(sql: str, request: Request) -> str:
    for name in sorted(_MACROS, key=len, reverse=True):
        for full, args in _backend_matches(sql, name):
            sql = sql.replace(full, _MACROS[name](request, args))
    return sql


def _backend_matches(sql: str, name: str) -> list[tuple[str, list[str]]]:
    matches = []
    for found in re.finditer(rf"\$__{name}\b", sql):
        args, length = _backend_args(sql[found.end() :])
        if length < 0:
            raise MacroError(f"$__{name}: failed to parse macro arguments (missing close bracket?)")
        matches.append((sql[found.start() : found.end() + length], args))
    return matches


def _backend_args(text: str) -> tuple[list[str], int]:
    """The SDK's parseArgs: trimmed arguments and the length of the bracketed list; ([], 0) if none."""
    if not text.startswith("("):
        return [], 0
    args: list[str] = []
    depth, current = 0, ""
    for index, char in enumerate(text):
        if char == "(":
            depth += 1
            if depth == 1:
                continue
        elif char == ")":
            depth -= 1
            if depth == 0:
                return [*args, current.strip()], index + 1
        elif char == "," and depth == 1:
            args.append(current.strip())
            current = ""
            continue
        current += char
    return [], -1


def _need(args: Sequence[str], count: int, name: str) -> None:
    if len(args) != count:
        raise MacroError(f"$__{name}: unexpected number of arguments: expected {count}, received {len(args)}")


def _seconds(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(seconds=1)


def _epoch_ms(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _ms(span: timedelta) -> int:
    return span // timedelta(milliseconds=1)


def _date_time(moment: datetime) -> str:
    return f"toDateTime({_seconds(moment)})"


def _date_time64(moment: datetime) -> str:
    return f"fromUnixTimestamp64Milli({_epoch_ms(moment)})"


def _date(moment: datetime) -> str:
    return f"toDate('{moment.astimezone(UTC):%Y-%m-%d}')"


def _filter(render: Callable[[datetime], str], name: str) -> Callable[[Request, list[str]], str]:
    def macro(request: Request, args: list[str]) -> str:
        _need(args, 1, name)
        column = args[0]
        return f"{column} >= {render(request.start)} AND {column} <= {render(request.end)}"

    return macro


def _date_time_filter(request: Request, args: list[str]) -> str:
    _need(args, 2, "dateTimeFilter")
    day, moment = args
    days = f"({day} >= {_date(request.start)} AND {day} <= {_date(request.end)})"
    times = f"({moment} >= {_date_time(request.start)} AND {moment} <= {_date_time(request.end)})"
    return f"{days} AND {times}"


def _interval_seconds(request: Request) -> int:
    return int(max(request.interval.total_seconds(), 1))


def _time_interval(request: Request, args: list[str]) -> str:
    _need(args, 1, "timeInterval")
    return f"toStartOfInterval(toDateTime({args[0]}), INTERVAL {_interval_seconds(request)} second)"


def _time_interval_ms(request: Request, args: list[str]) -> str:
    _need(args, 1, "timeInterval_ms")
    milliseconds = max(_ms(request.interval), 1)
    return f"toStartOfInterval(toDateTime64({args[0]}, 3), INTERVAL {milliseconds} millisecond)"


def _interval_text(span: timedelta) -> str:
    """Grafana's short interval notation: 500ms, 10s, 5m, 1h, 1d."""
    ms = _ms(span)
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


_MACROS: dict[str, Callable[[Request, list[str]], str]] = {
    "fromTime": lambda request, _: _date_time(request.start),
    "toTime": lambda request, _: _date_time(request.end),
    "fromTime_ms": lambda request, _: _date_time64(request.start),
    "toTime_ms": lambda request, _: _date_time64(request.end),
    "timeFilter": _filter(_date_time, "timeFilter"),
    "timeFilter_ms": _filter(_date_time64, "timeFilter_ms"),
    "dateFilter": _filter(_date, "dateFilter"),
    "dateTimeFilter": _date_time_filter,
    "dt": _date_time_filter,
    "timeInterval": _time_interval,
    "timeInterval_ms": _time_interval_ms,
    "interval_s": lambda request, _: str(_interval_seconds(request)),
}
