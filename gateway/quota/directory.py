"""Virtual keys and tenant overrides in Redis (redis-py), and their short local caches.

Layout (prefix `limits.key_prefix`, default `sluice:`):

    <prefix>vk:h:<sha256 of the key>   STRING  the key's record (JSON), revoked ones included
    <prefix>vk:i:<key id>              STRING  the sha256 of its current secret
    <prefix>vk:ids                     SET     every key id
    <prefix>tn:<tenant>                STRING  a tenant's limits and budget set by an operator
    <prefix>tn:names                   SET     tenants that have such a record

The request path reads a key's record at most once per `limits.key_cache_s` (0.5 s) per
process and key, concurrent misses sharing one GET: a revoked, expired, rotated or
changed key is seen by every replica within that time. While Redis does not answer, a
record already cached keeps being used (nothing can be revoked meanwhile) and an unknown
key gets 503, not 401 (it may well be valid). Revoking keeps the record (marked), so a
gateway that has keys never reopens to anonymous callers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError, WatchError

from gateway.auth import Principal
from gateway.errors import Unauthorized
from gateway.quota.config import TenantQuota
from gateway.quota.errors import QuotaUnavailable
from gateway.quota.model import QuotaSpec
from gateway.quota.records import KeyCreate, KeyPatch, KeyRecord, TenantRecord, TenantUpdate, new_secret

log = logging.getLogger("sluice.quota")
T = TypeVar("T")
_STALE_MAX_S = 300.0          # how long a cached record may stand in for an unreachable Redis
_CACHE_MAX = 10_000


class _TtlCache(Generic[T]):
    """Values loaded at most once per `ttl_s`; concurrent misses share one load; while the
    loader fails, a value loaded less than `_STALE_MAX_S` ago stands in (tried again after
    another `ttl_s`)."""

    def __init__(self, ttl_s: float) -> None:
        self._ttl = ttl_s
        self._items: dict[str, tuple[float, float, T]] = {}     # key -> (loaded at, checked at, value)
        self._loading: dict[str, asyncio.Future[T]] = {}

    async def get(self, key: str, load: Callable[[str], Awaitable[T]]) -> T:
        hit = self._items.get(key)
        now = time.monotonic()
        if hit is not None and now - hit[1] < self._ttl:
            return hit[2]
        pending = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._loading[key] = fut
        loaded_at = now
        try:
            value = await load(key)
        except RedisError as exc:
            if hit is None or now - hit[0] >= _STALE_MAX_S:
                fut.set_exception(exc)
                fut.exception()                      # retrieved: no "never retrieved" warning
                raise
            loaded_at, value = hit[0], hit[2]
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()
            raise
        finally:
            self._loading.pop(key, None)
        if hit is None and len(self._items) >= _CACHE_MAX:
            self._items.pop(next(iter(self._items)))
        self._items[key] = (loaded_at, time.monotonic(), value)
        fut.set_result(value)
        return value

    def forget(self, key: str) -> None:
        self._items.pop(key, None)


def redis_client(url: str, timeout_s: float) -> aioredis.Redis:
    """redis-py for everything off the hot path: short timeouts, no retries (as the cache)."""
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    return aioredis.Redis.from_url(url, socket_timeout=max(timeout_s, 1.0), socket_connect_timeout=max(timeout_s, 1.0),
                                   retry=Retry(NoBackoff(), 0), protocol=2)


class KeyDirectory:
    def __init__(self, client: aioredis.Redis, prefix: str, cache_s: float) -> None:
        self._r = client
        self._p = prefix
        self._cache: _TtlCache[KeyRecord | None] = _TtlCache(cache_s)
        self._has_keys = False
        self._next_check = 0.0
        self._checking: asyncio.Task | None = None

    # -- the request path ----------------------------------------------------------------

    @property
    def has_keys(self) -> bool:
        """Whether any virtual key exists (then every request needs a valid key). Sticky
        once true; while false, re-read from Redis in the background once a second."""
        if not self._has_keys and self._checking is None and time.monotonic() >= self._next_check:
            self._checking = asyncio.get_running_loop().create_task(self._check_has_keys())
        return self._has_keys

    async def refresh_has_keys(self) -> None:
        try:
            self._has_keys = self._has_keys or bool(await self._r.scard(self._p + "vk:ids"))
        except RedisError as exc:
            log.warning("limits: cannot read virtual keys from Redis (%s)", type(exc).__name__)

    async def _check_has_keys(self) -> None:
        try:
            await self.refresh_has_keys()
        finally:
            self._next_check = time.monotonic() + 1.0
            self._checking = None

    async def lookup(self, digest: str) -> Principal | None:
        """The principal of a key by the sha256 of its secret; None if no such key.
        Raises Unauthorized (revoked, expired) or QuotaUnavailable (Redis down, not cached)."""
        try:
            record = await self._cache.get(digest, self._load)
        except RedisError:
            raise QuotaUnavailable("The key store is unavailable; retry shortly",
                                   headers={"retry-after": "1"}) from None
        if record is None:
            return None
        if record.revoked_at is not None:
            raise Unauthorized("This API key has been revoked")
        if record.expires_at is not None and record.expires_at <= time.time():
            raise Unauthorized("This API key has expired")
        return principal_of(record)

    async def _load(self, digest: str) -> KeyRecord | None:
        raw = await self._r.get(self._p + "vk:h:" + digest)
        return KeyRecord.model_validate_json(raw) if raw else None

    # -- the admin API ---------------------------------------------------------------------

    async def create(self, spec: KeyCreate) -> tuple[KeyRecord, str]:
        record = KeyRecord.create(spec)
        secret = new_secret()
        digest = _sha(secret)
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.set(self._p + "vk:h:" + digest, record.dumps())
            pipe.set(self._p + "vk:i:" + record.id, digest)
            pipe.sadd(self._p + "vk:ids", record.id)
            await pipe.execute()
        self._has_keys = True
        return record, secret

    async def ids(self) -> list[str]:
        return sorted(m.decode() for m in await self._r.smembers(self._p + "vk:ids"))

    async def all(self) -> list[KeyRecord]:
        ids = await self.ids()
        if not ids:
            return []
        digests = await self._r.mget([self._p + "vk:i:" + i for i in ids])
        raws = await self._r.mget([self._p + "vk:h:" + d.decode() for d in digests if d])
        return [KeyRecord.model_validate_json(r) for r in raws if r]

    async def get(self, key_id: str) -> KeyRecord | None:
        digest = await self._r.get(self._p + "vk:i:" + key_id)
        if not digest:
            return None
        raw = await self._r.get(self._p + "vk:h:" + digest.decode())
        return KeyRecord.model_validate_json(raw) if raw else None

    async def update(self, key_id: str, change: Callable[[KeyRecord], KeyRecord | None]) -> KeyRecord | None:
        """Apply `change` to the stored record atomically (WATCH: a concurrent revoke is never
        undone by a patch that read the record before it). None if there is no such key."""
        id_key = self._p + "vk:i:" + key_id
        while True:
            async with self._r.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(id_key)
                    digest = await pipe.get(id_key)
                    if not digest:
                        return None
                    h_key = self._p + "vk:h:" + digest.decode()
                    await pipe.watch(h_key)
                    raw = await pipe.get(h_key)
                    if not raw:
                        return None
                    record = change(KeyRecord.model_validate_json(raw))
                    if record is None:
                        return None
                    pipe.multi()
                    pipe.set(h_key, record.dumps())
                    await pipe.execute()
                    self._cache.forget(digest.decode())
                    return record
                except WatchError:
                    continue

    async def patch(self, key_id: str, patch: KeyPatch) -> KeyRecord | None:
        return await self.update(key_id, lambda r: r.patched(patch))

    async def revoke(self, key_id: str) -> KeyRecord | None:
        def mark(r: KeyRecord) -> KeyRecord:
            if r.revoked_at is not None:
                return r
            now = time.time()
            return r.model_copy(update={"revoked_at": now, "updated_at": now})
        return await self.update(key_id, mark)

    async def rotate(self, key_id: str) -> tuple[KeyRecord, str] | None:
        """A new secret for the key; the old one stops working (within key_cache_s everywhere)."""
        id_key = self._p + "vk:i:" + key_id
        while True:
            async with self._r.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(id_key)
                    old = await pipe.get(id_key)
                    if not old:
                        return None
                    old_h = self._p + "vk:h:" + old.decode()
                    await pipe.watch(old_h)
                    raw = await pipe.get(old_h)
                    if not raw:
                        return None
                    record = KeyRecord.model_validate_json(raw)
                    if record.revoked_at is not None:
                        return record, ""
                    record = record.model_copy(update={"updated_at": time.time()})
                    secret = new_secret()
                    digest = _sha(secret)
                    pipe.multi()
                    pipe.set(self._p + "vk:h:" + digest, record.dumps())
                    pipe.set(id_key, digest)
                    # the old secret stays known, as revoked: it gets "revoked", not "invalid"
                    pipe.set(old_h, record.model_copy(update={"revoked_at": time.time()}).dumps())
                    await pipe.execute()
                    self._cache.forget(old.decode())
                    return record, secret
                except WatchError:
                    continue


def _sha(secret: str) -> str:
    from gateway.auth import hash_key
    return hash_key(secret)


def principal_of(record: KeyRecord) -> Principal:
    return Principal(record.tenant, record.id, frozenset(record.models) if record.models is not None else None,
                     quota_id=record.id, limits=QuotaSpec.build(record.limits, record.budget),
                     expires_at=record.expires_at)


class TenantDirectory:
    """A tenant's limits: an operator's record in Redis if there is one, else `limits.tenants`."""

    def __init__(self, config: dict[str, TenantQuota], client: aioredis.Redis | None, prefix: str,
                 cache_s: float) -> None:
        self._config = {name: QuotaSpec.build(t.limits, t.budget) for name, t in config.items()}
        self._r = client
        self._p = prefix
        self._cache: _TtlCache[QuotaSpec | None | bool] = _TtlCache(cache_s)

    @property
    def dynamic(self) -> bool:
        return self._r is not None

    def configured(self, name: str) -> QuotaSpec | None:
        return self._config.get(name)

    @property
    def config_names(self) -> list[str]:
        return list(self._config)

    async def spec(self, name: str) -> QuotaSpec | None:
        if self._r is None:
            return self._config.get(name)
        try:
            found = await self._cache.get(name, self._load)
        except RedisError:
            return self._config.get(name)
        return self._config.get(name) if found is False else found   # False: no record

    async def _load(self, name: str) -> QuotaSpec | None | bool:
        raw = await self._r.get(self._p + "tn:" + name)
        if not raw:
            return False
        record = TenantRecord.model_validate_json(raw)
        return QuotaSpec.build(record.limits, record.budget)

    async def record(self, name: str) -> TenantRecord | None:
        raw = await self._r.get(self._p + "tn:" + name)
        return TenantRecord.model_validate_json(raw) if raw else None

    async def names(self) -> list[str]:
        stored = await self._r.smembers(self._p + "tn:names") if self._r is not None else set()
        return sorted(set(self._config) | {m.decode() for m in stored})

    async def put(self, name: str, update: TenantUpdate) -> TenantRecord:
        record = TenantRecord(limits=update.limits, budget=update.budget, updated_at=time.time())
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.set(self._p + "tn:" + name, orjson_dumps(record.model_dump()))
            pipe.sadd(self._p + "tn:names", name)
            await pipe.execute()
        self._cache.forget(name)
        return record

    async def delete(self, name: str) -> bool:
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.delete(self._p + "tn:" + name)
            pipe.srem(self._p + "tn:names", name)
            deleted, _ = await pipe.execute()
        self._cache.forget(name)
        return bool(deleted)


def orjson_dumps(value: Any) -> bytes:
    import orjson
    return orjson.dumps(value)
