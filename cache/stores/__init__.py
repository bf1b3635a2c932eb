"""Cache backends: Redis (production, shared by replicas) and an in-process store (the default)."""

from .base import CacheStore, Candidate, Entry, Partition, StoreUnavailable
from .embedded import EmbeddedStore
from .redis import RedisStore

__all__ = ["CacheStore", "Candidate", "EmbeddedStore", "Entry", "Partition", "RedisStore", "StoreUnavailable"]
