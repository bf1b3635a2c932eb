"""The Redis store: exact entries and a RediSearch vector index, shared by all replicas.

Layout (prefix from config, default `sluice:cache:`):
  <prefix>x:<tenant>:<hash>   HASH {r: response}                      exact-only requests
  <prefix>s:<tenant>:<hash>   HASH {r, q, tenant, model, ctx, vec}    semantic-capable requests,
                                                                      indexed by prefix
The exact lookup is one HGET either way (keys.py picks the prefix from the request).
Every key carries the entry's TTL; RediSearch drops expired documents from the index itself.

Failure model: short socket timeouts and no client-side retries, so a dead Redis costs a
request at most one timeout. After a failure the store answers StoreUnavailable without
touching the network for `retry_after_s`, then tries again; when Redis answers again the
index is re-created if the server came back empty. A server without the search module
runs exact-only, with one clear warning at start.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.commands.search.field import TagField, VectorField
from redis.commands.search.index_definition import IndexDefinition, IndexType
from redis.exceptions import RedisError, ResponseError
from redis.retry import Retry

from .base import Candidate, Entry, Partition, StoreUnavailable

log = logging.getLogger("sluice.cache")


class RedisStore:
    def __init__(
        self,
        url: str,
        index_name: str = "sluice-cache",
        key_prefix: str = "sluice:cache:",
        timeout_s: float = 0.25,
        retry_after_s: float = 1.0,
        hnsw_m: int = 16,
        hnsw_ef_construction: int = 200,
        hnsw_ef_runtime: int = 10,
    ) -> None:
        self._url = url
        self._client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            protocol=2,
        )
        self._index = index_name
        self._prefix = key_prefix
        self._retry_after_s = retry_after_s
        self._hnsw = (hnsw_m, hnsw_ef_construction, hnsw_ef_runtime)
        self._dim = 0
        self._has_search = False
        self._ready = False  # index verified on the server we are talking to
        self._down_until = 0.0
        self.errors = 0  # Redis failures seen (each one a fail-open request)

    @property
    def supports_vectors(self) -> bool:
        return self._has_search and self._dim > 0

    async def start(self, dim: int) -> None:
        self._dim = dim
        try:
            await self._setup()
        except RedisError as exc:
            # Start anyway: the gateway must serve without its cache, and we retry later.
            log.warning("cache: Redis at %s unavailable at start (%s); cache fails open until it answers", self._url, exc)
            self._trip()

    async def _setup(self) -> None:
        await self._client.ping()
        try:
            await self._client.execute_command("FT._LIST")
            self._has_search = True
        except ResponseError:
            if not self._ready:
                log.warning(
                    "cache: Redis at %s has no search module (FT.* commands unknown): "
                    "semantic cache DISABLED, exact cache only. Use Redis 8 / Redis Stack for semantic caching.",
                    self._url,
                )
            self._has_search = False
        if self._has_search and self._dim:
            await self._ensure_index()
        self._ready = True

    async def _ensure_index(self) -> None:
        search = self._client.ft(self._index)
        try:
            info = await search.info()
        except ResponseError:
            info = None
        if info is not None:
            dim = _index_dim(info)
            if dim is not None and dim != self._dim:
                log.error(
                    "cache: index %r holds %d-dim vectors but the embedder makes %d: semantic cache DISABLED "
                    "(drop the index or set cache.index_name)", self._index, dim, self._dim
                )
                self._has_search = False
            return
        m, ef_construction, _ = self._hnsw
        try:
            await search.create_index(
                [
                    TagField("tenant"),
                    TagField("model"),
                    TagField("ctx"),
                    VectorField(
                        "vec",
                        "HNSW",
                        {"TYPE": "FLOAT32", "DIM": self._dim, "DISTANCE_METRIC": "COSINE", "M": m,
                         "EF_CONSTRUCTION": ef_construction},
                    ),
                ],
                definition=IndexDefinition(prefix=[f"{self._prefix}s:"], index_type=IndexType.HASH),
            )
        except ResponseError as exc:
            if "already exists" not in str(exc).lower():  # another replica won the race
                raise

    def _trip(self) -> None:
        self.errors += 1
        self._ready = False
        self._down_until = time.monotonic() + self._retry_after_s

    async def _before(self) -> None:
        if time.monotonic() < self._down_until:
            raise StoreUnavailable("redis unavailable (waiting before retry)")
        if not self._ready:
            try:
                await self._setup()
            except RedisError as exc:
                self._trip()
                raise StoreUnavailable(f"redis: {exc}") from exc

    async def get(self, key: str) -> bytes | None:
        await self._before()
        try:
            return await self._client.hget(key, "r")
        except RedisError as exc:
            self._trip()
            raise StoreUnavailable(f"redis: {exc}") from exc

    async def nearest(self, partition: Partition, vector: np.ndarray, k: int = 3) -> list[Candidate]:
        await self._before()
        if not self.supports_vectors:
            return []
        query = (
            f"(@tenant:{{{partition.tenant}}} @model:{{{partition.model}}} @ctx:{{{partition.context}}})"
            f"=>[KNN {k} @vec $vec EF_RUNTIME {self._hnsw[2]} AS dist]"
        )
        args = ["FT.SEARCH", self._index, query, "PARAMS", "2", "vec", vector.astype(np.float32).tobytes(),
                "RETURN", "3", "r", "q", "dist", "SORTBY", "dist", "LIMIT", "0", str(k), "DIALECT", "2"]
        try:
            # Raw FT.SEARCH on the hot path: the payload stays bytes and nothing is re-parsed.
            reply = await self._client.execute_command(*args)
        except ResponseError as exc:
            if "no such index" in str(exc).lower():  # Redis came back empty: rebuild and miss
                self._ready = False
                return []
            raise StoreUnavailable(f"redis: {exc}") from exc
        except RedisError as exc:
            self._trip()
            raise StoreUnavailable(f"redis: {exc}") from exc
        found = []
        for i in range(2, len(reply or []), 2):  # [total, key1, fields1, key2, fields2, ...]
            fields = dict(zip(reply[i][::2], reply[i][1::2], strict=True))
            payload = fields.get(b"r")
            if payload is None or b"dist" not in fields:  # expired between match and read
                continue
            text = fields.get(b"q", b"").decode("utf-8", "replace")
            found.append(Candidate(payload, 1.0 - float(fields[b"dist"]), text))
        return found

    async def put(self, entry: Entry) -> None:
        await self._before()
        semantic = self.supports_vectors and entry.vector is not None and entry.partition is not None
        mapping: dict[str, bytes | str] = {"r": entry.payload}
        key = entry.key
        if semantic:
            assert entry.vector is not None and entry.partition is not None
            mapping |= {
                "q": entry.text,
                "tenant": entry.partition.tenant,
                "model": entry.partition.model,
                "ctx": entry.partition.context,
                "vec": entry.vector.astype(np.float32).tobytes(),
            }
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping=mapping)
                pipe.expire(key, entry.ttl_s)
                await pipe.execute()
        except RedisError as exc:
            self._trip()
            raise StoreUnavailable(f"redis: {exc}") from exc

    async def aclose(self) -> None:
        await self._client.aclose()


def _index_dim(info: dict) -> int | None:
    for attribute in info.get("attributes", []):
        flat = [a.decode() if isinstance(a, bytes) else a for a in attribute]
        if "VECTOR" in flat:
            for name in ("dim", "DIM"):
                if name in flat:
                    return int(flat[flat.index(name) + 1])
    return None
