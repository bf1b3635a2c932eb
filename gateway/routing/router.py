"""Walk a model's deployments with retries, backoff, fallback and circuit breaking.

The router knows nothing of wire formats: it calls `attempt(deployment)` and reads only
the two flags of `UpstreamError` (retryable here, worth falling back). Every try is
appended to the caller's `attempts` list, which ends up in headers and the trace.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from gateway.config import ModelConfig, RouterConfig, SluiceConfig
from gateway.errors import AllDeploymentsFailed, AttemptRecord, UpstreamRejected
from gateway.providers import ProviderAdapter, make_adapter
from gateway.routing.breaker import BreakerState, CircuitBreaker
from gateway.routing.deployment import Deployment
from gateway.routing.strategies import STRATEGIES, Strategy
from gateway.upstream import UpstreamError, upstream_error_message

T = TypeVar("T")
BreakerListener = Callable[[str, BreakerState], None]


class ModelRoute:
    """The deployments of one public model and how to order them."""

    def __init__(self, name: str, deployments: list[Deployment], strategy: Strategy, retries: int):
        self.name = name
        self.deployments = deployments
        self.by_name = {d.name: d for d in deployments}
        self.strategy = strategy
        self.retries = retries

    def candidates(self, rng: random.Random, eligible: Callable[[Deployment], bool] | None) -> list[Deployment]:
        deps: Sequence[Deployment] = self.deployments
        if eligible is not None:
            deps = [d for d in deps if eligible(d)]
        if len(deps) <= 1:
            return list(deps)
        ordered = self.strategy(deps, rng)
        # Deployments whose circuit is open go last: tried only if everything else failed.
        return [d for d in ordered if d.breaker.available()] + [d for d in ordered if not d.breaker.available()]


class Router:
    def __init__(self, cfg: SluiceConfig, on_breaker_change: BreakerListener | None = None,
                 rng: random.Random | None = None):
        self.cfg: RouterConfig = cfg.router
        self._rng = rng or random.Random()
        adapters: dict[str, ProviderAdapter] = {name: make_adapter(p) for name, p in cfg.providers.items()}
        self.routes: dict[str, ModelRoute] = {
            name: self._build_route(name, model, cfg, adapters, on_breaker_change)
            for name, model in cfg.models.items()
        }

    def _build_route(self, name: str, model: ModelConfig, cfg: SluiceConfig,
                     adapters: dict[str, ProviderAdapter], listener: BreakerListener | None) -> ModelRoute:
        deps = []
        for i, dc in enumerate(model.deployments):
            provider = cfg.providers[dc.provider]
            dep_name = dc.name or f"{dc.provider}/{dc.model}"
            on_change = (lambda state, n=dep_name: listener(n, state)) if listener else None
            breaker = CircuitBreaker(self.cfg.breaker.failure_threshold, self.cfg.breaker.cooldown_s, on_change)
            deps.append(Deployment.from_config(dc, i, provider.type, provider.timeouts, adapters[dc.provider], breaker))
        retries = self.cfg.retries if model.retries is None else model.retries
        return ModelRoute(name, deps, STRATEGIES[model.strategy], retries)

    def backoff_s(self, retry: int, retry_after_s: float | None) -> float | None:
        """Delay before retry number `retry` (0-based); None = don't wait, fall over instead."""
        if retry_after_s is not None:
            return retry_after_s if retry_after_s <= self.cfg.max_retry_after_s else None
        base = min(self.cfg.backoff_max_s, self.cfg.backoff_base_s * (2 ** retry))
        return base * (0.5 + self._rng.random() / 2)      # jitter spreads synchronized retries

    async def run(self, route: ModelRoute, attempt: Callable[[Deployment], Awaitable[T]],
                  attempts: list[AttemptRecord], *, hold: bool = False,
                  eligible: Callable[[Deployment], bool] | None = None) -> tuple[Deployment, T]:
        """Return the first deployment that answered and its result.

        With `hold`, the deployment's in-flight count stays raised after success (a stream
        is still being read); the caller must `release(deployment)` when it ends.
        """
        limit = self.cfg.max_attempts
        waited_ms = 0.0
        for dep in route.candidates(self._rng, eligible):
            for retry in range(route.retries + 1):
                if len(attempts) >= limit:
                    raise AllDeploymentsFailed(route.name, attempts)
                if not dep.breaker.acquire():
                    attempts.append(AttemptRecord(dep.name, "circuit_open", 0.0))
                    break
                dep.in_flight += 1
                started = time.perf_counter()
                try:
                    result = await attempt(dep)
                except UpstreamError as err:
                    dep.in_flight -= 1
                    attempts.append(AttemptRecord(dep.name, err.outcome, (time.perf_counter() - started) * 1000,
                                                  err.status, err.retry_after_s, waited_ms, started))
                    waited_ms = 0.0
                    if not err.fallback:
                        # The provider rejected the request itself: another deployment would too.
                        dep.breaker.record_success()
                        raise UpstreamRejected(upstream_error_message(err), err.status or 400, err.body,
                                               dep.adapter.wire_format) from None
                    dep.breaker.record_failure()
                    delay = self.backoff_s(retry, err.retry_after_s) if err.retryable else None
                    if delay is None or retry == route.retries:
                        break
                    await asyncio.sleep(delay)
                    waited_ms = delay * 1000
                    continue
                except BaseException:
                    dep.in_flight -= 1
                    dep.breaker.release()       # cancelled or failed on our side: no verdict
                    raise
                if not hold:
                    dep.in_flight -= 1
                elapsed = (time.perf_counter() - started) * 1000
                dep.observe_latency(elapsed)
                dep.breaker.record_success()
                attempts.append(AttemptRecord(dep.name, "ok", elapsed, backoff_ms=waited_ms, started=started))
                return dep, result
        raise AllDeploymentsFailed(route.name, attempts)

    @staticmethod
    def release(dep: Deployment) -> None:
        dep.in_flight -= 1
