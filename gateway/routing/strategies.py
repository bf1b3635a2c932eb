"""Routing strategies: each orders a model's deployments into the sequence to try.

Priority always comes first (lower tries earlier); a strategy decides the order
within one priority level. The router walks the result, so fallback to the next
deployment falls out of the ordering for every strategy.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from gateway.routing.deployment import Deployment

Strategy = Callable[[Sequence[Deployment], random.Random], list[Deployment]]


def fallback(deps: Sequence[Deployment], rng: random.Random) -> list[Deployment]:
    return sorted(deps, key=lambda d: (d.priority, d.order))


def weighted(deps: Sequence[Deployment], rng: random.Random) -> list[Deployment]:
    # Weighted sampling without replacement (Efraimidis-Spirakis): the first pick follows
    # the weights exactly, and the remaining picks give the fallback order.
    return sorted(deps, key=lambda d: (d.priority, -(rng.random() ** (1.0 / d.weight))))


def least_latency(deps: Sequence[Deployment], rng: random.Random) -> list[Deployment]:
    # Unmeasured deployments go first so each gets a sample; ties are shuffled.
    return sorted(deps, key=lambda d: (d.priority, d.latency_ewma_ms or 0.0, rng.random()))


def least_busy(deps: Sequence[Deployment], rng: random.Random) -> list[Deployment]:
    return sorted(deps, key=lambda d: (d.priority, d.in_flight, rng.random()))


STRATEGIES: dict[str, Strategy] = {
    "fallback": fallback,
    "weighted": weighted,
    "least-latency": least_latency,
    "least-busy": least_busy,
}
