"""Which deployment serves an attempt: the order of a model's deployments under its strategy.

    priority        as listed: the first is preferred, the others are failover
    weighted        a random order drawn by weight (weight 0: only when the others failed)
    least_busy      fewest requests in flight first
    lowest_latency  lowest moving average of time to response headers first (untried ones first)

The router keeps per-deployment counters (in flight, latency average) for this worker process; it does no I/O.
"""

import random
from dataclasses import dataclass

from gateway.settings import Deployment, ModelConfig

LATENCY_SMOOTHING = 0.2


@dataclass
class DeploymentState:
    in_flight: int = 0
    latency: float | None = None


class Router:
    def __init__(self, rng: random.Random | None = None) -> None:
        self._state: dict[Deployment, DeploymentState] = {}
        self._random = rng or random.Random()

    def state(self, deployment: Deployment) -> DeploymentState:
        return self._state.setdefault(deployment, DeploymentState())

    def plan(self, model: ModelConfig) -> list[Deployment]:
        """The model's deployments in the order attempts should try them."""
        deployments = list(model.deployments)
        if len(deployments) == 1 or model.strategy == "priority":
            return deployments
        if model.strategy == "weighted":
            return self._weighted_order(deployments)
        if model.strategy == "least_busy":
            return sorted(deployments, key=lambda d: self.state(d).in_flight)
        return sorted(deployments, key=lambda d: self.state(d).latency or 0.0)

    def _weighted_order(self, deployments: list[Deployment]) -> list[Deployment]:
        """Weighted sampling without replacement (Efraimidis-Spirakis keys); weight 0 goes last."""
        keyed = [(self._random.random() ** (1.0 / d.weight) if d.weight else -1.0, d) for d in deployments]
        return [d for _, d in sorted(keyed, key=lambda pair: pair[0], reverse=True)]

    def started(self, deployment: Deployment) -> None:
        self.state(deployment).in_flight += 1

    def finished(self, deployment: Deployment, latency: float | None) -> None:
        state = self.state(deployment)
        state.in_flight -= 1
        if latency is not None:
            previous = state.latency
            state.latency = latency if previous is None else previous + LATENCY_SMOOTHING * (latency - previous)
