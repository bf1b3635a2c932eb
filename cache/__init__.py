"""Exact and semantic response cache, isolated per tenant, model and request context.

The gateway builds one ResponseCache from the `cache:` config section, awaits start() in
its lifespan, and per request calls lookup() before routing and store() after a complete
answer. Streams of cached answers are rebuilt by cache.replay.
"""

from .config import CacheConfig, CachePolicy, CachePolicyOverride, EmbedderConfig
from .request import CacheLookup, CacheRequest, Directive, parse_directive
from .response_cache import CacheMetrics, ResponseCache

__all__ = [
    "CacheConfig",
    "CacheLookup",
    "CacheMetrics",
    "CachePolicy",
    "CachePolicyOverride",
    "CacheRequest",
    "Directive",
    "EmbedderConfig",
    "ResponseCache",
    "parse_directive",
]
