"""The same behaviour from both backends: the Lua scripts on a real Redis server, and the in-process one."""

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway.limits.counters import Backend, Counter, LocalBackend, now_ms
from gateway.limits.plan import Periods, Who, plan
from gateway.limits.redis_backend import BackendDown, RedisBackend
from gateway.limits.service import Limits
from gateway.policy.compiled import merge
from gateway.policy.loader import load
from gateway.settings import LimitsSettings
from tests.redis_server import RedisServer

tickets = (f"t{n}" for n in itertools.count())


@pytest.fixture(params=["process", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "process":
        yield LocalBackend()
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    server.flush()
    redis = RedisBackend(server.url, timeout=1.0)
    try:
        yield redis
    finally:
        await redis.close()


def rpm(limit: int, enforce: bool = True) -> Counter:
    return Counter("rpm", "{t}:rpm:a", limit, 1, enforce=enforce)


async def test_rpm_admits_exactly_the_limit_and_says_when_to_retry(backend: Backend) -> None:
    results = [await backend.admit([rpm(5)], next(tickets)) for _ in range(7)]
    assert [r.ok for r in results] == [True] * 5 + [False] * 2
    assert results[4].states[0].used == 5
    refused = results[5]
    assert refused.refused == 0 and 59_000 <= refused.retry_after_ms <= 60_000


async def test_a_refused_request_takes_nothing_from_any_counter(backend: Backend) -> None:
    small = Counter("rpm", "{t}:rpm:small", 1, 1)
    big = Counter("rpm", "{t}:rpm:big", 10, 1)
    assert (await backend.admit([big, small], next(tickets))).ok
    refused = await backend.admit([big, small], next(tickets))
    assert not refused.ok and refused.refused == 1
    assert [s.used for s in await backend.peek([big, small])] == [1, 1]


async def test_shadow_counters_count_but_never_refuse(backend: Backend) -> None:
    results = [await backend.admit([rpm(2, enforce=False)], next(tickets)) for _ in range(3)]
    assert all(r.ok for r in results)
    assert results[2].over == (0,)
    assert (await backend.peek([rpm(2)]))[0].used == 3


async def test_tpm_admits_on_the_estimate_and_is_corrected_by_the_real_usage(backend: Backend) -> None:
    tpm = Counter("tpm", "{t}:tpm:a", 1000, 600)
    first = next(tickets)
    assert (await backend.admit([tpm], first)).ok
    assert not (await backend.admit([tpm], next(tickets))).ok  # 600 + 600 > 1000
    await backend.settle([tpm], [150], first, False)
    assert (await backend.peek([tpm]))[0].used == 150
    assert (await backend.admit([tpm], next(tickets))).ok  # 150 + 600 fits now
    too_big = Counter("tpm", "{t}:tpm:a", 1000, 1001)
    assert (await backend.admit([too_big], next(tickets))).retry_after_ms == -1


async def test_concurrency_slots_are_released_on_settle_and_expire_after_their_lease(backend: Backend) -> None:
    slot = Counter("concurrent", "{t}:conc:a", 2, 1, window_ms=200)
    a, b = next(tickets), next(tickets)
    assert (await backend.admit([slot], a)).ok and (await backend.admit([slot], b)).ok
    assert not (await backend.admit([slot], next(tickets))).ok
    await backend.settle([slot], [1], a, False)
    assert (await backend.admit([slot], next(tickets))).ok
    await asyncio.sleep(0.25)  # both remaining leases expired: as if their worker had crashed
    assert (await backend.peek([slot]))[0].used == 0


def budget(limit: int, amount: int, alerts: tuple[int, ...] = ()) -> Counter:
    return Counter("budget", "{t}:budget:a", limit, amount, 60_000, now_ms() + 3_600_000, True, alerts)


async def test_budget_reserves_the_maximum_then_settles_the_real_cost(backend: Backend) -> None:
    first = next(tickets)
    assert (await backend.admit([budget(1000, 700)], first)).ok
    assert not (await backend.admit([budget(1000, 400)], next(tickets))).ok  # 700 reserved + 400 > 1000
    await backend.settle([budget(1000, 700)], [250], first, False)
    assert (await backend.peek([budget(1000, 0)]))[0].used == 250
    assert (await backend.admit([budget(1000, 400)], next(tickets))).ok


async def test_a_retried_settlement_is_not_counted_twice(backend: Backend) -> None:
    ticket = next(tickets)
    assert (await backend.admit([budget(1000, 300)], ticket)).ok
    await backend.settle([budget(1000, 300)], [300], ticket, False)
    await backend.settle([budget(1000, 300)], [300], ticket, True)  # the retry after an ambiguous failure
    assert (await backend.peek([budget(1000, 0)]))[0].used == 300


async def test_spend_without_a_reservation_is_still_recorded(backend: Backend) -> None:
    await backend.settle([budget(1000, 0)], [123], next(tickets), False)
    assert (await backend.peek([budget(1000, 0)]))[0].used == 123


async def test_a_soft_threshold_is_reported_once(backend: Backend) -> None:
    crossed = []
    for _ in range(4):
        ticket = next(tickets)
        assert (await backend.admit([budget(1000, 250, (800,))], ticket)).ok
        crossed += await backend.settle([budget(1000, 250, (800,))], [250], ticket, False)
    assert [(c.index, c.threshold, c.spent) for c in crossed] == [(0, 800, 1000)]


async def test_amounts_beyond_float_precision_of_lua_strings_stay_exact(backend: Backend) -> None:
    huge = 10**15 + 7  # Lua would print 1e+15 if the number went through tostring
    ticket = next(tickets)
    assert (await backend.admit([budget(10**16, huge)], ticket)).ok
    await backend.settle([budget(10**16, huge)], [huge], ticket, False)
    assert (await backend.peek([budget(10**16, 0)]))[0].used == huge


async def test_redis_unreachable_is_backend_down_not_a_crash() -> None:
    from tests.servers import free_port

    redis = RedisBackend(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
    try:
        with pytest.raises(BackendDown, match="connecting"):
            await redis.admit([rpm(5)], "x")
    finally:
        await redis.close()


async def test_scripts_the_server_forgot_are_loaded_again(redis_server: RedisServer) -> None:
    redis = RedisBackend(redis_server.url, timeout=1.0)
    try:
        assert (await redis.admit([rpm(5)], next(tickets))).ok
        redis_server.client().script_flush()  # as after a restart
        results = await asyncio.gather(*(redis.admit([rpm(5)], next(tickets)) for _ in range(3)))  # one pipeline
        assert [r.ok for r in results] == [True] * 3
        assert (await redis.peek([rpm(5)]))[0].used == 4
    finally:
        await redis.close()


async def test_concurrent_calls_share_a_pipeline_and_each_gets_its_own_answer(redis_server: RedisServer) -> None:
    redis_server.flush()
    redis = RedisBackend(redis_server.url, timeout=1.0)
    try:
        results = await asyncio.gather(*(redis.admit([rpm(30)], next(tickets)) for _ in range(40)))
        assert sorted(r.states[0].used for r in results if r.ok) == list(range(1, 31))
        assert sum(not r.ok for r in results) == 10
    finally:
        await redis.close()


def test_in_process_leases_expire_oldest_first_and_settled_ones_are_gone() -> None:
    local = LocalBackend()
    slots = Counter("concurrent", "{t}:conc:a", 10_000, 1, 1000)
    budget = Counter("budget", "{t}:budget:a", 10**9, 5, 1000, expire_at_ms=10**15)
    for n in range(3000):  # taken 1 ms apart; every third one settles, the rest are left to expire
        assert local.admit_now([slots, budget], f"l{n}", 1_000 + n).ok
        if n % 3 == 0:
            local.settle_now([slots, budget], [1, 2], f"l{n}")
    # at 4_500 the leases taken at 3_500 or before have expired (1000 ms leases): n <= 2_500
    state = local.admit_now([slots, budget], "late", 4_500)
    live = [n for n in range(2_501, 3000) if n % 3 != 0]
    assert state.states[0].used == len(live) + 1
    assert state.states[1].used == (3000 // 3) * 2 + 5 * (len(live) + 1)  # spent + reserved


async def test_a_request_cancelled_during_its_admission_gives_back_what_it_took(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """The client goes away while the admission script is on its way: the script runs anyway, and its slot
    and budget reservation come back at once, not after their lease (15 minutes by default)."""
    redis_server.flush()
    (tmp_path / "p.yaml").write_text(
        "policies:\n  - name: p\n    rules:\n"
        "      - {name: r, kind: rate_limit, per: [key], rpm: 100, tpm: 10000, concurrent: 2}\n"
        "      - {name: b, kind: budget, per: [team], usd: 10, period: month}\n"
    )
    effective = merge("rev", load(tmp_path).loaded)
    planned = plan(
        effective,
        Who("k1", "t1", "m", ""),
        prefix="gw",
        periods=Periods(ZoneInfo("UTC")),
        now=time.time(),
        prompt_tokens=10,
        answer_cap=20,
        reserve=5_000,
        lease_ms=900_000,
    )
    limits = Limits(LimitsSettings(redis_url=redis_server.url))
    try:
        admitting = [asyncio.create_task(limits.admit(planned, f"gone{n}")) for n in range(2)]
        await asyncio.sleep(0)  # both admissions queued (or written): their clients go away now
        for task in admitting:
            task.cancel()
        await asyncio.gather(*admitting, return_exceptions=True)
        for _ in range(100):  # the answers arrive, then the lazy settlements leave
            await asyncio.sleep(0.02)
            states = await limits.peek(planned)
            if [s.used for s in states][1:] == [0, 0, 0]:
                break
        kinds = [p.counter.kind for p in planned]
        used = dict(zip(kinds, [s.used for s in states], strict=True))
        assert used == {"rpm": 2, "tpm": 0, "concurrent": 0, "budget": 0}  # requests counted, nothing held
        assert (await limits.admit(planned, "next")).admission.ok  # both slots are free again
    finally:
        await limits.close()


async def test_a_corrected_tpm_entry_keeps_its_log_expiring(redis_server: RedisServer) -> None:
    """Correcting the only entry of a TPM log must not leave the log without its expiry (it was deleted for
    a moment and recreated, so it never expired)."""
    redis_server.flush()
    redis = RedisBackend(redis_server.url, timeout=1.0)
    tpm = Counter("tpm", "{t}:tpm:alone", 10_000, 100)
    try:
        ticket = next(tickets)
        assert (await redis.admit([tpm], ticket)).ok
        await redis.settle([tpm], [40], ticket, False)
        client = redis_server.client()
        assert 0 < client.pttl(tpm.key) <= 60_000 and 0 < client.pttl(tpm.key + ":aux") <= 60_000
        assert (await redis.peek([tpm]))[0].used == 40
    finally:
        await redis.close()
