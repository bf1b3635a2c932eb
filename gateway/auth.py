"""Gateway keys: who is calling, and which public models they may use.

Keys from config are hashed at start-up (SHA-256) and only the hashes are kept; the
plaintext is never logged or stored. Callers present a key as `Authorization: Bearer`
(OpenAI SDK) or `x-api-key` (Anthropic SDK). Virtual keys (created through the admin API)
are looked up the same way, by hash, in Redis (`gateway.quota.directory`).

The evaluator key (`monitoring.evaluator_key`) is the monitor's own: its requests (the
self-consistency re-asks, the judge's calls) authenticate as `EVALUATOR`, and the pipeline
neither caches them, nor counts them against any limit or budget, and marks their rows
`traffic = 'evaluator'`. It is recognised even on an open gateway (no keys configured).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

from gateway.config import KeyConfig
from gateway.errors import Forbidden, Unauthorized
from gateway.quota.model import QuotaSpec

OPEN_TENANT = "default"


@dataclass(frozen=True, slots=True)
class Principal:
    tenant: str
    key_id: str                            # non-secret: the key's label or a hash prefix
    models: frozenset[str] | None          # None = every model
    quota_id: str = ""                     # the key's counters in the limiter ("" = anonymous)
    limits: QuotaSpec | None = None        # the key's own rate limits and budget
    expires_at: float | None = None        # epoch seconds (virtual keys)
    evaluator: bool = False                # the monitor's evaluator key: no cache, no limits, not user traffic

    def check_model(self, model: str) -> None:
        if self.models is not None and model not in self.models:
            raise Forbidden(f"This key may not use model '{model}'")

    def allows(self, model: str) -> bool:
        return self.models is None or model in self.models


ANONYMOUS = Principal(OPEN_TENANT, "", None)
EVALUATOR_TENANT = "sluice-evaluator"
EVALUATOR = Principal(EVALUATOR_TENANT, "evaluator", None, evaluator=True)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def presented_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif name == b"x-api-key" or name == b"api-key":
            return value.decode("latin-1").strip() or None
    return None


class VirtualKeys(Protocol):
    """Keys kept outside the config (gateway.quota.directory.KeyDirectory, in Redis)."""

    @property
    def has_keys(self) -> bool: ...

    async def lookup(self, digest: str) -> Principal | None: ...


class KeyStore:
    def __init__(self, keys: list[KeyConfig] | None, virtual: VirtualKeys | None = None,
                 evaluator_key: str | None = None):
        self._configured = keys is not None
        self._virtual = virtual
        self._evaluator_digest = hash_key(evaluator_key) if evaluator_key else None
        self.dynamic = virtual is not None        # some keys live in Redis: authenticate_async
        self._by_hash: dict[str, Principal] = {}
        for k in keys or []:
            digest = (k.key_sha256 or hash_key(k.key or "")).lower()
            models = frozenset(k.models) if k.models is not None else None
            self._by_hash[digest] = Principal(k.tenant, k.name or f"key-{digest[:12]}", models,
                                              quota_id=f"cfg-{digest[:16]}", limits=QuotaSpec.build(k.limits, k.budget))

    @property
    def enabled(self) -> bool:
        """Keys are required once any exist: in config, or created through the admin API."""
        return self._configured or (self._virtual is not None and self._virtual.has_keys)

    @property
    def checks_keys(self) -> bool:
        """Whether the pipeline must read the presented key: keys are required, or an
        evaluator key may be presented to an open gateway."""
        return self.enabled or self._evaluator_digest is not None

    def configured(self) -> list[Principal]:
        return list(self._by_hash.values())

    def _local(self, headers: list[tuple[bytes, bytes]]) -> tuple[Principal | None, str]:
        """The evaluator, anonymous (no keys required) or a configured key's principal;
        else (None, digest) for the virtual keys to look up. The key is hashed once."""
        if not self.enabled and self._evaluator_digest is None:
            return ANONYMOUS, ""
        key = presented_key(headers)
        digest = hash_key(key) if key is not None else ""
        if digest and digest == self._evaluator_digest:
            return EVALUATOR, digest
        if not self.enabled:
            return ANONYMOUS, ""
        if key is None:
            raise Unauthorized("Missing API key: send 'Authorization: Bearer <key>' or 'x-api-key'")
        return self._by_hash.get(digest), digest

    async def authenticate_async(self, headers: list[tuple[bytes, bytes]]) -> Principal:
        """`authenticate`, then the virtual keys (a Redis read at most every key_cache_s)."""
        principal, digest = self._local(headers)
        if principal is None and self._virtual is not None:
            principal = await self._virtual.lookup(digest)
        if principal is None:
            raise Unauthorized("Invalid API key")
        return principal

    def authenticate(self, headers: list[tuple[bytes, bytes]]) -> Principal:
        principal, _ = self._local(headers)
        if principal is None:
            raise Unauthorized("Invalid API key")
        return principal
