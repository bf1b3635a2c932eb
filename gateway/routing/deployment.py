"""A deployment at run time: its config, adapter, breaker and live statistics."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config import DeploymentConfig, Timeouts
from gateway.providers import ProviderAdapter
from gateway.routing.breaker import CircuitBreaker

_EWMA_ALPHA = 0.3   # weight of the newest latency sample: reacts within a few requests


@dataclass(eq=False, slots=True)
class Deployment:
    name: str
    provider: str
    provider_type: str
    upstream_model: str
    weight: float
    priority: int
    timeouts: Timeouts
    adapter: ProviderAdapter
    breaker: CircuitBreaker
    order: int = 0                       # position in config, the tie-breaker for fallback
    in_flight: int = 0
    latency_ewma_ms: float | None = None

    @classmethod
    def from_config(cls, cfg: DeploymentConfig, order: int, provider_type: str, provider_timeouts: Timeouts,
                    adapter: ProviderAdapter, breaker: CircuitBreaker) -> "Deployment":
        return cls(name=cfg.name or f"{cfg.provider}/{cfg.model}", provider=cfg.provider,
                   provider_type=provider_type, upstream_model=cfg.model, weight=cfg.weight,
                   priority=cfg.priority, timeouts=cfg.timeouts or provider_timeouts, adapter=adapter,
                   breaker=breaker, order=order)

    def observe_latency(self, ms: float) -> None:
        prev = self.latency_ewma_ms
        self.latency_ewma_ms = ms if prev is None else prev + _EWMA_ALPHA * (ms - prev)
