"""Which deployment serves an attempt: the order of a model's deployments under its strategy.

    priority        as listed: the first is preferred, the others are failover
    weighted        a random order drawn by weight (weight 0: only when the others failed)
    least_busy      fewest requests in flight first
    lowest_latency  lowest moving average of time to response headers first (untried ones first)

A deployment is skipped while it is unavailable: its circuit breaker is open (`breaker.failures` consecutive
failures; after `breaker.cooldown` seconds one half-open probe is let through, whose outcome closes or re-opens
it), its active health check failed, or it has `max_concurrent` requests in flight.

The router keeps this state per deployment for its worker process; it does no I/O (the health prober in
gateway.upstream.health reports into it).
"""

import random
import time
from dataclasses import dataclass

from gateway.settings import Breaker, Deployment, ModelConfig

LATENCY_SMOOTHING = 0.2


@dataclass
class DeploymentState:
    in_flight: int = 0
    latency: float | None = None
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False
    healthy: bool = True

    @property
    def breaker(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half_open" if self.probing else "open"


class Router:
    def __init__(self, rng: random.Random | None = None) -> None:
        self._state: dict[Deployment, DeploymentState] = {}
        self._random = rng or random.Random()

    def state(self, deployment: Deployment) -> DeploymentState:
        return self._state.setdefault(deployment, DeploymentState())

    def plan(self, model: ModelConfig, now: float | None = None) -> list[Deployment]:
        """The model's available deployments in the order attempts should try them."""
        now = time.monotonic() if now is None else now
        deployments = [d for d in model.deployments if self._available(d, model.breaker, now)]
        if len(deployments) <= 1 or model.strategy == "priority":
            return deployments
        if model.strategy == "weighted":
            return self._weighted_order(deployments)
        if model.strategy == "least_busy":
            return sorted(deployments, key=lambda d: self.state(d).in_flight)
        return sorted(deployments, key=lambda d: self.state(d).latency or 0.0)

    def _available(self, deployment: Deployment, breaker: Breaker, now: float) -> bool:
        state = self.state(deployment)
        if not state.healthy:
            return False
        if deployment.max_concurrent is not None and state.in_flight >= deployment.max_concurrent:
            return False
        if state.opened_at is None:
            return True
        return not state.probing and now - state.opened_at >= breaker.cooldown

    def record(self, deployment: Deployment, breaker: Breaker, ok: bool | None, now: float | None = None) -> None:
        """An attempt's outcome for the breaker: True success, False failure, None neither (e.g. cancelled, 429)."""
        state = self.state(deployment)
        probe, state.probing = state.probing, False
        if ok:
            state.failures, state.opened_at = 0, None
        elif ok is False:
            state.failures += 1
            if probe or state.failures >= breaker.failures:
                state.opened_at = time.monotonic() if now is None else now

    def set_health(self, deployment: Deployment, healthy: bool) -> None:
        self.state(deployment).healthy = healthy

    def _weighted_order(self, deployments: list[Deployment]) -> list[Deployment]:
        """Weighted sampling without replacement (Efraimidis-Spirakis keys); weight 0 goes last."""
        keyed = [(self._random.random() ** (1.0 / d.weight) if d.weight else -1.0, d) for d in deployments]
        return [d for _, d in sorted(keyed, key=lambda pair: pair[0], reverse=True)]

    def started(self, deployment: Deployment) -> None:
        state = self.state(deployment)
        state.in_flight += 1
        if state.opened_at is not None:
            state.probing = True  # half-open: this attempt is the one probe

    def finished(self, deployment: Deployment, latency: float | None) -> None:
        state = self.state(deployment)
        state.in_flight -= 1
        if latency is not None:
            previous = state.latency
            state.latency = latency if previous is None else previous + LATENCY_SMOOTHING * (latency - previous)
