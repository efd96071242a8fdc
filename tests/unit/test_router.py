"""The router's choices, without I/O: strategies, the breaker's states, capacity and health."""

import collections
import random

from gateway.settings import Breaker, Deployment, ModelConfig
from gateway.upstream.router import Router

A = Deployment(provider="vllm", base_url="http://a/v1", model="m", name="a", weight=3)
B = Deployment(provider="vllm", base_url="http://b/v1", model="m", name="b", weight=1)


def model(strategy: str = "priority", **extra: object) -> ModelConfig:
    return ModelConfig(name="m", deployments=(A, B), strategy=strategy, **extra)  # type: ignore[arg-type]


def test_priority_keeps_the_listed_order() -> None:
    assert Router().plan(model()) == [A, B]


def test_weighted_first_choices_follow_the_weights() -> None:
    router = Router(random.Random(7))
    firsts = collections.Counter(router.plan(model("weighted"))[0].name for _ in range(4000))
    assert 0.72 <= firsts["a"] / 4000 <= 0.78


def test_least_busy_prefers_fewer_requests_in_flight() -> None:
    router = Router()
    router.started(A)
    assert router.plan(model("least_busy")) == [B, A]
    router.finished(A, 0.1)
    assert router.plan(model("least_busy")) == [A, B]


def test_lowest_latency_prefers_the_faster_moving_average() -> None:
    router = Router()
    for deployment, latency in ((A, 0.5), (B, 0.1)):
        router.started(deployment)
        router.finished(deployment, latency)
    assert router.plan(model("lowest_latency")) == [B, A]


def test_the_breaker_opens_half_opens_and_closes() -> None:
    router, breaker = Router(), Breaker(failures=2, cooldown=10)
    config = model(breaker=breaker)
    router.record(A, breaker, False, now=0)
    assert router.plan(config, now=0) == [A, B]
    router.record(A, breaker, False, now=1)
    assert router.state(A).breaker == "open"
    assert router.plan(config, now=5) == [B]
    assert router.plan(config, now=11) == [A, B]  # cool-down over: A may be probed
    router.started(A)
    assert router.state(A).breaker == "half_open"
    assert router.plan(config, now=11) == [B]  # only one probe at a time
    router.finished(A, 0.1)
    router.record(A, breaker, True, now=11)
    assert router.state(A).breaker == "closed"


def test_a_failed_probe_reopens_and_a_neutral_outcome_frees_the_probe() -> None:
    router, breaker = Router(), Breaker(failures=1, cooldown=10)
    router.record(A, breaker, False, now=0)
    router.started(A)
    router.record(A, breaker, None, now=10)  # e.g. the client went away: no verdict, probe slot freed
    assert router.plan(model(breaker=breaker), now=10) == [A, B]
    router.started(A)
    router.record(A, breaker, False, now=12)
    assert router.plan(model(breaker=breaker), now=15) == [B]


def test_capacity_and_health_make_a_deployment_unavailable() -> None:
    capped = Deployment(provider="vllm", base_url="http://c/v1", model="m", max_concurrent=1)
    config = ModelConfig(name="m", deployments=(capped, B))
    router = Router()
    router.started(capped)
    assert router.plan(config) == [B]
    router.set_health(B, False)
    assert router.plan(config) == []
