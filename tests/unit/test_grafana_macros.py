"""The test-side expander of Grafana variables and ClickHouse plugin macros writes what the plugin would send.

The expected strings are the plugin's own (grafana/clickhouse-datasource pkg/macros/macros_test.go and
src/data/CHDatasource.test.ts) where it has them, with the same inputs.
"""

from datetime import UTC, datetime, timedelta

import pytest

from tests.grafana_macros import ALL, MacroError, Request, UnknownMacro, Variable, expand

START = datetime(2014, 11, 12, 11, 45, 26, 371000, tzinfo=UTC)
END = datetime(2015, 11, 12, 11, 45, 26, 371000, tzinfo=UTC)


def request(interval: float = 20, **variables: Variable) -> Request:
    return Request(START, END, timedelta(seconds=interval), variables)


def team(*current: str, multi: bool = True, all_value: str | None = None) -> Variable:
    return Variable("team", current, ("finance", "research"), multi, all_value)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("$__fromTime", "toDateTime(1415792726)"),
        ("$__toTime", "toDateTime(1447328726)"),
        ("$__fromTime_ms", "fromUnixTimestamp64Milli(1415792726371)"),
        ("$__toTime_ms", "fromUnixTimestamp64Milli(1447328726371)"),
        ("$__timeFilter(ts)", "ts >= toDateTime(1415792726) AND ts <= toDateTime(1447328726)"),
        (
            "$__timeFilter_ms( ts )",
            "ts >= fromUnixTimestamp64Milli(1415792726371) AND ts <= fromUnixTimestamp64Milli(1447328726371)",
        ),
        ("$__dateFilter(d)", "d >= toDate('2014-11-12') AND d <= toDate('2015-11-12')"),
        (
            "$__dt(d, t)",
            "(d >= toDate('2014-11-12') AND d <= toDate('2015-11-12')) AND "
            "(t >= toDateTime(1415792726) AND t <= toDateTime(1447328726))",
        ),
        ("$__timeInterval(col)", "toStartOfInterval(toDateTime(col), INTERVAL 20 second)"),
        ("$__timeInterval_ms(col)", "toStartOfInterval(toDateTime64(col, 3), INTERVAL 20000 millisecond)"),
        ("INTERVAL $__interval_s second", "INTERVAL 20 second"),
        ("$__interval / $__interval_ms", "20s / 20000"),
        ("$__from-$__to", "1415792726371-1447328726371"),
    ],
)
def test_plugin_macros_expand_as_the_plugin_writes_them(sql: str, expected: str) -> None:
    assert expand(sql, request()) == expected


def test_an_interval_under_a_second_counts_as_one_second_but_keeps_its_milliseconds() -> None:
    sub_second = request(0.25)
    assert expand("$__interval_s", sub_second) == "1"
    assert (
        expand("$__timeInterval_ms(c)", sub_second) == "toStartOfInterval(toDateTime64(c, 3), INTERVAL 250 millisecond)"
    )
    assert expand("$__interval", sub_second) == "250ms"


def test_a_macro_nested_in_a_function_call_keeps_the_call_around_it() -> None:
    sql = "SELECT count() FROM t WHERE ($__timeFilter(toDateTime(ts, 'UTC'))) AND x IN (1, 2)"
    assert expand(sql, request()) == (
        "SELECT count() FROM t WHERE (toDateTime(ts, 'UTC') >= toDateTime(1415792726) AND "
        "toDateTime(ts, 'UTC') <= toDateTime(1447328726)) AND x IN (1, 2)"
    )


CONDITION = "WHERE $__conditionalAll(team IN (${team:singlequote}), $team)"


def test_conditional_all_is_1_eq_1_when_all_is_selected() -> None:
    assert expand(CONDITION, request(team=team(ALL))) == "WHERE 1=1"


def test_conditional_all_keeps_the_condition_for_chosen_values() -> None:
    assert expand(CONDITION, request(team=team("research", "fin'ance"))) == "WHERE team IN ('research','fin\\'ance')"


def test_conditional_all_reads_the_variable_as_a_dollar_name_or_in_braces_only() -> None:
    braces = "$__conditionalAll(team = 1, ${team})"
    formatted = "$__conditionalAll(team = 1, ${team:singlequote})"  # the plugin does not see a name here
    assert expand(braces, request(team=team(ALL))) == "1=1"
    assert expand(formatted, request(team=team(ALL))) == "team = 1"


def test_several_conditional_alls_are_each_expanded() -> None:
    model = Variable("model", ("gpt-4o",), ("gpt-4o", "mock"))
    sql = "$__conditionalAll(a IN ($team), $team) AND $__conditionalAll(b IN ($model), $model)"
    assert expand(sql, request(team=team(ALL), model=model)) == "1=1 AND b IN ('gpt-4o')"


def test_multi_value_variables_use_the_plugin_format_and_all_means_every_option() -> None:
    assert expand("team IN ($team)", request(team=team("research"))) == "team IN ('research')"
    assert expand("team IN ($team)", request(team=team(ALL))) == "team IN ('finance','research')"
    assert expand("[[team]] ${team:csv}", request(team=team("a", "b"))) == "'a','b' a,b"
    assert expand("${team:sqlstring}", request(team=team("o'neil"))) == "'o''neil'"


def test_a_single_value_variable_is_written_as_is_and_a_custom_all_value_unformatted() -> None:
    assert expand("team = '$team'", request(team=team("research", multi=False))) == "team = 'research'"
    assert expand("team LIKE ${team:singlequote}", request(team=team(ALL, all_value="'%'"))) == "team LIKE '%'"


@pytest.mark.parametrize(
    "sql",
    [
        "$__timeGroup(ts, hour)",  # the SDK's default, SQL Server syntax
        "$__timeFrom(ts)",
        "$__table",
        "WHERE team = $nobody",
        "${team:text}",
        "${__from:date:iso}",
        "$__conditionalAll(a, b, $team)",  # three arguments: the plugin leaves it as is
    ],
)
def test_anything_grafana_or_the_plugin_would_not_expand_is_refused(sql: str) -> None:
    with pytest.raises(UnknownMacro):
        expand(sql, request(team=team(ALL)))


@pytest.mark.parametrize("sql", ["$__timeFilter(ts", "$__timeFilter(a, b)", "$__timeInterval", "$__dt(d)"])
def test_a_known_macro_used_wrongly_is_an_error(sql: str) -> None:
    with pytest.raises(MacroError):
        expand(sql, request())
