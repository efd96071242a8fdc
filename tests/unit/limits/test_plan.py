"""Counters a request takes: calendar periods in a time zone, keys per scope, the answer cap, headers."""

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.limits import costs
from gateway.limits.counters import Admission, State
from gateway.limits.plan import Periods, Planner, Who, period_of, plan
from gateway.limits.stage import duration, headers
from gateway.policy.compiled import Effective, merge
from gateway.policy.loader import load

BERLIN = ZoneInfo("Europe/Berlin")
UTC = ZoneInfo("UTC")


def at(text: str, zone: ZoneInfo) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=zone).timestamp()


def ms(text: str, zone: ZoneInfo) -> int:
    return int(at(text, zone) * 1000)


def test_a_day_ends_at_local_midnight_even_across_a_dst_change() -> None:
    ident, end = period_of("day", BERLIN, at("2026-03-29 12:00", BERLIN))  # 23-hour day
    assert ident == "2026-03-29" and end == ms("2026-03-30 00:00", BERLIN)
    assert end - ms("2026-03-29 00:00", BERLIN) == 23 * 3600 * 1000


def test_weeks_are_iso_weeks_from_monday() -> None:
    ident, end = period_of("week", UTC, at("2026-11-24 10:00", UTC))  # a Tuesday
    assert ident == "2026-W48" and end == ms("2026-11-30 00:00", UTC)
    assert period_of("week", UTC, at("2027-01-01 10:00", UTC))[0] == "2026-W53"


def test_months_roll_over_the_year() -> None:
    assert period_of("month", UTC, at("2026-12-31 23:59", UTC)) == ("2026-12", ms("2027-01-01 00:00", UTC))
    # 23:30 UTC on Nov 30 is already December in Berlin
    assert period_of("month", BERLIN, at("2026-11-30 23:30", UTC))[0] == "2026-12"


POLICY = """\
policies:
  - name: p
    rules:
      - {name: r, kind: rate_limit, per: [team, model], rpm: 10, tpm: 1000, concurrent: 2, default_max_tokens: 50}
      - {name: b, kind: budget, per: [], usd: 1.5, period: day, alert_percent: [95, 50, 50]}
  - name: s
    mode: shadow
    rules:
      - {name: watch, kind: rate_limit, per: [user], rpm: 1}
"""


def effective_of(folder: Path) -> Effective:
    (folder / "p.yaml").write_text(POLICY)
    return merge("rev", load(folder).loaded)


def test_plan_keys_name_rule_and_scope_and_carry_the_estimates(tmp_path: Path) -> None:
    effective = effective_of(tmp_path)
    who = Who("k1", "fin/ance", "gpt-4o", "alice")
    planned = plan(
        effective,
        who,
        prefix="gw",
        periods=Periods(UTC),
        now=at("2026-11-24 10:00", UTC),
        prompt_tokens=30,
        answer_cap=None,
        reserve=1234,
        lease_ms=5000,
    )
    keys = [(p.counter.kind, p.counter.key, p.counter.amount, p.counter.enforce) for p in planned]
    assert keys == [
        ("rpm", "{gw}:rpm:p/r:team=fin%2Fance,model=gpt-4o", 1, True),
        ("tpm", "{gw}:tpm:p/r:team=fin%2Fance,model=gpt-4o", 80, True),  # 30 prompt + default 50
        ("concurrent", "{gw}:conc:p/r:team=fin%2Fance,model=gpt-4o", 1, True),
        ("rpm", "{gw}:rpm:s/watch:user=alice", 1, False),
        ("budget", "{gw}:budget:p/b:2026-11-24:all", 1234, True),
    ]
    budget = planned[-1].counter
    assert budget.limit == 1_500_000 and budget.alerts == (750_000, 1_425_000)
    assert planned[2].counter.window_ms == 5000


def test_answer_cap_counts_every_choice_and_embeddings_answer_nothing() -> None:
    assert costs.answer_cap("chat/completions", {"max_tokens": 100, "n": 3}) == 300
    assert costs.answer_cap("chat/completions", {"max_completion_tokens": 7}) == 7
    assert costs.answer_cap("responses", {"max_output_tokens": 9}) == 9
    assert costs.answer_cap("embeddings", {}) == 0
    assert costs.answer_cap("chat/completions", {"max_tokens": True}) is None


def test_openai_style_reset_durations() -> None:
    assert [duration(v) for v in (0, 20, 1500, 59_999, 60_000, 360_000)] == [
        "0ms",
        "20ms",
        "1.5s",
        "59.999s",
        "1m0s",
        "6m0s",
    ]


def test_headers_show_the_tightest_enforced_counter(tmp_path: Path) -> None:
    effective = effective_of(tmp_path)
    who = Who("k", "t", "m", "u")
    planned = plan(
        effective,
        who,
        prefix="gw",
        periods=Periods(UTC),
        now=0,
        prompt_tokens=1,
        answer_cap=1,
        reserve=0,
        lease_ms=1000,
    )
    states = (State(4, 1000), State(900, 2000), State(1, 0), State(1, 0), State(0, 0))
    out = headers(planned, Admission(True, states=states))
    assert out == {
        "x-ratelimit-limit-requests": "10",
        "x-ratelimit-remaining-requests": "6",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "100",
        "x-ratelimit-reset-tokens": "2s",
    }


def test_the_planner_answers_what_plan_answers_for_every_amount(tmp_path: Path) -> None:
    effective = effective_of(tmp_path)
    planner = Planner("gw", Periods(UTC), 5000)
    now = at("2026-11-24 10:00", UTC)
    for prompt, cap, reserve in ((30, None, 1234), (1, 7, 0), (500, 0, 99)):
        template = planner.template(effective, "k1", "fin/ance", "gpt-4o", "alice", now)
        expected = plan(
            effective,
            Who("k1", "fin/ance", "gpt-4o", "alice"),
            prefix="gw",
            periods=Periods(UTC),
            now=now,
            prompt_tokens=prompt,
            answer_cap=cap,
            reserve=reserve,
            lease_ms=5000,
        )
        assert template.fill(prompt, cap, reserve) == expected
        assert template.needs_tokens and template.budgets


def test_the_planner_starts_a_new_budget_period_and_follows_a_new_policy(tmp_path: Path) -> None:
    effective = effective_of(tmp_path)
    planner = Planner("gw", Periods(UTC), 5000)
    before = planner.template(effective, "k", "t", "m", "", at("2026-11-24 23:59", UTC))
    assert before is planner.template(effective, "k", "t", "m", "", at("2026-11-24 23:59:59", UTC))
    after = planner.template(effective, "k", "t", "m", "", at("2026-11-25 00:00", UTC))
    assert after.fill(0, 0, 0)[-1].counter.key == "{gw}:budget:p/b:2026-11-25:all"
    reloaded = merge("rev2", load(tmp_path).loaded)  # equal, but another revision's object
    assert planner.template(reloaded, "k", "t", "m", "", at("2026-11-25 00:00", UTC)).effective is reloaded
