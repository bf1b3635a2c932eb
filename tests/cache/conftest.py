"""Fixtures: one real embedder per session, real Redis servers, caches on either backend."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from cache import CacheConfig, ResponseCache
from cache.embedders import LocalEmbedder
from cache.stores import EmbeddedStore, RedisStore


class SessionEmbedder:
    """The session's real LocalEmbedder, lent to many caches: they must not close it."""

    def __init__(self, inner: LocalEmbedder) -> None:
        self._inner = inner
        self.name = inner.name
        self.dim = inner.dim

    async def start(self) -> None:
        pass

    async def embed(self, text: str) -> np.ndarray | None:
        return await self._inner.embed(text)

    async def aclose(self) -> None:
        pass


@pytest.fixture(scope="session")
async def local_embedder(model_cache_dir: Path) -> AsyncIterator[LocalEmbedder]:
    embedder = LocalEmbedder(model_cache_dir)
    await embedder.start()
    yield embedder
    await embedder.aclose()


def unique_config(**overrides: object) -> CacheConfig:
    """A config whose keys and index no other test shares (tests share one Redis server)."""
    tag = uuid.uuid4().hex[:8]
    base: dict[str, object] = {"enabled": True, "index_name": f"idx-{tag}", "key_prefix": f"t{tag}:",
                               "redis_retry_after_s": 0.2}
    return CacheConfig.model_validate({**base, **overrides})


async def build_cache(
    backend: str, embedder: LocalEmbedder | None, cfg: CacheConfig, redis_url: str | None = None
) -> ResponseCache:
    store = (
        RedisStore(redis_url or "", cfg.index_name, cfg.key_prefix, cfg.redis_timeout_s, cfg.redis_retry_after_s)
        if backend == "redis"
        else EmbeddedStore(cfg.embedded_max_entries, cfg.embedded_max_bytes)
    )
    cache = ResponseCache(cfg, store, SessionEmbedder(embedder) if embedder is not None else None)
    await cache.start()
    return cache


@pytest.fixture(params=["redis", "embedded"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_cache(backend: str, local_embedder: LocalEmbedder, request: pytest.FixtureRequest):
    """Factory: make_cache(**config overrides) -> a started ResponseCache on the parametrized backend."""
    caches: list[ResponseCache] = []
    url = request.getfixturevalue("redis_search").url if backend == "redis" else None

    async def make(**overrides: object) -> ResponseCache:
        cache = await build_cache(backend, local_embedder, unique_config(**overrides), url)
        caches.append(cache)
        return cache

    yield make
    for cache in caches:
        await cache.aclose()
