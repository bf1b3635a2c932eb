"""Redis outages and a Redis without the search module: the cache fails open and recovers."""

from __future__ import annotations

import asyncio
import logging
import time

from tests.cache.cache_bodies import chat, completion
from tests.cache.conftest import build_cache, unique_config
from tests.redis_server import start_redis

QUESTION = "How do I reset my password?"
PARAPHRASE = "How can I reset my password?"


async def test_redis_killed_mid_test_fails_open_and_recovers(local_embedder) -> None:
    server = start_redis(with_search=True)
    cache = await build_cache("redis", local_embedder, unique_config(), server.url)
    try:
        req = chat(QUESTION)
        assert await cache.store(req, completion("Use the reset link."), await cache.lookup(req))
        assert (await cache.lookup(chat(PARAPHRASE))).status == "semantic-hit"

        server.stop()
        started = time.perf_counter()
        down = await cache.lookup(chat(QUESTION))
        assert down.status == "error"
        assert (time.perf_counter() - started) < 0.5, "a dead Redis must cost at most a short timeout"
        assert await cache.store(req, completion("x"), down) is False  # no exception
        # While Redis is marked down, lookups answer at once without touching the network.
        started = time.perf_counter()
        assert (await cache.lookup(chat(QUESTION))).status == "error"
        assert (time.perf_counter() - started) < 0.05
        assert cache.counters["lookup_error"] >= 2 and cache.counters["store_error"] >= 1

        server.start()  # same port, empty: the index must come back by itself
        await asyncio.sleep(0.25)  # redis_retry_after_s = 0.2 in unique_config
        first = await cache.lookup(chat(QUESTION))
        assert first.status == "miss", first
        assert await cache.store(req, completion("Use the reset link."), first)
        assert (await cache.lookup(chat(QUESTION))).status == "hit"
        assert (await cache.lookup(chat(PARAPHRASE))).status == "semantic-hit"
    finally:
        await cache.aclose()
        server.stop()


async def test_redis_down_at_start_then_up(local_embedder) -> None:
    server = start_redis(with_search=True)
    server.stop()
    cache = await build_cache("redis", local_embedder, unique_config(), server.url)  # must not raise
    try:
        assert (await cache.lookup(chat(QUESTION))).status == "error"
        server.start()
        await asyncio.sleep(0.25)
        req = chat(QUESTION)
        lookup = await cache.lookup(req)
        assert lookup.status == "miss"
        assert await cache.store(req, completion("Use the reset link."), lookup)
        assert (await cache.lookup(chat(PARAPHRASE))).status == "semantic-hit"
    finally:
        await cache.aclose()
        server.stop()


async def test_redis_without_search_is_exact_only_with_a_warning(local_embedder, redis_plain, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="sluice.cache"):
        cache = await build_cache("redis", local_embedder, unique_config(), redis_plain.url)
    try:
        assert any("no search module" in r.getMessage() for r in caplog.records)
        assert cache.semantic_available is False
        req = chat(QUESTION)
        lookup = await cache.lookup(req)
        assert lookup.status == "miss" and lookup.embedding is None  # no embedding cost either
        assert await cache.store(req, completion("Use the reset link."), lookup)
        assert (await cache.lookup(chat(QUESTION))).status == "hit"
        assert (await cache.lookup(chat(PARAPHRASE))).status == "miss"
    finally:
        await cache.aclose()


async def test_index_dimension_mismatch_disables_semantic(local_embedder, redis_search, caplog) -> None:
    cfg = unique_config()
    from cache.stores import RedisStore

    other = RedisStore(redis_search.url, cfg.index_name, cfg.key_prefix)
    await other.start(dim=8)  # an index made by a different embedder
    await other.aclose()
    with caplog.at_level(logging.ERROR, logger="sluice.cache"):
        cache = await build_cache("redis", local_embedder, cfg, redis_search.url)
    try:
        assert cache.semantic_available is False
        assert any("8-dim vectors" in r.getMessage() for r in caplog.records)
    finally:
        await cache.aclose()
