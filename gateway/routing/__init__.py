from gateway.routing.breaker import BreakerState, CircuitBreaker
from gateway.routing.deployment import Deployment
from gateway.routing.router import ModelRoute, Router

__all__ = ["BreakerState", "CircuitBreaker", "Deployment", "ModelRoute", "Router"]
