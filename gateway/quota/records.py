"""Virtual keys and tenant overrides as the admin API takes them and Redis stores them.

A virtual key is stored under the SHA-256 of its secret; the secret itself is shown once,
in the answer to create or rotate, and kept nowhere. Records carry the key's id (what
every API, log, trace, metric and ClickHouse row uses), its tenant, the models it may use,
its limits and budget, an optional expiry and free-form metadata.
"""

from __future__ import annotations

import secrets
import time
from datetime import datetime, timezone
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.quota.config import Budget, RateLimits

KEY_PREFIX = "sk-sluice-"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
_METADATA_MAX_BYTES = 4096


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def new_key_id() -> str:
    return "key_" + secrets.token_hex(8)


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _epoch(value: datetime | None) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp()


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("metadata", check_fields=False)
    @classmethod
    def _small(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None and len(orjson.dumps(v)) > _METADATA_MAX_BYTES:
            raise ValueError(f"at most {_METADATA_MAX_BYTES} bytes of JSON")
        return v


class KeyCreate(_Input):
    tenant: str = Field(pattern=NAME_PATTERN)
    name: str | None = Field(None, max_length=128)
    models: list[str] | None = None
    limits: RateLimits = RateLimits()
    budget: Budget | None = None
    expires_at: datetime | None = None
    metadata: dict[str, Any] = {}


class KeyPatch(_Input):
    """Fields present are replaced (`null` clears `budget`, `models`, `expires_at`);
    `limits` is merged field by field. The tenant of a key cannot change."""

    name: str | None = Field(None, max_length=128)
    models: list[str] | None = None
    limits: RateLimits | None = None
    budget: Budget | None = None
    expires_at: datetime | None = None
    metadata: dict[str, Any] | None = None


class TenantUpdate(_Input):
    limits: RateLimits = RateLimits()
    budget: Budget | None = None


class KeyRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    tenant: str
    name: str | None = None
    models: list[str] | None = None
    limits: RateLimits = RateLimits()
    budget: Budget | None = None
    expires_at: float | None = None
    metadata: dict[str, Any] = {}
    created_at: float = 0.0
    updated_at: float = 0.0
    revoked_at: float | None = None

    @classmethod
    def create(cls, spec: KeyCreate) -> KeyRecord:
        now = time.time()
        return cls(id=new_key_id(), tenant=spec.tenant, name=spec.name, models=spec.models, limits=spec.limits,
                   budget=spec.budget, expires_at=_epoch(spec.expires_at), metadata=spec.metadata,
                   created_at=now, updated_at=now)

    def patched(self, patch: KeyPatch) -> KeyRecord:
        given = patch.model_fields_set
        update: dict[str, Any] = {"updated_at": time.time()}
        if "name" in given:
            update["name"] = patch.name
        if "models" in given:
            update["models"] = patch.models
        if "limits" in given:
            merged = self.limits.model_dump()
            if patch.limits is not None:
                merged.update({k: getattr(patch.limits, k) for k in patch.limits.model_fields_set})
            else:
                merged = {}
            update["limits"] = RateLimits(**merged)
        if "budget" in given:
            update["budget"] = patch.budget
        if "expires_at" in given:
            update["expires_at"] = _epoch(patch.expires_at)
        if "metadata" in given:
            update["metadata"] = patch.metadata or {}
        return self.model_copy(update=update)

    def dumps(self) -> bytes:
        return orjson.dumps(self.model_dump())

    @property
    def status(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= time.time():
            return "expired"
        return "active"

    def public(self) -> dict[str, Any]:
        """What the admin API shows: everything but secrets (there are none stored)."""
        return {"id": self.id, "tenant": self.tenant, "name": self.name, "models": self.models,
                "limits": self.limits.model_dump(), "budget": self.budget.model_dump() if self.budget else None,
                "expires_at": iso(self.expires_at), "metadata": self.metadata, "status": self.status,
                "created_at": iso(self.created_at), "updated_at": iso(self.updated_at),
                "revoked_at": iso(self.revoked_at), "source": "api"}


class TenantRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    limits: RateLimits = RateLimits()
    budget: Budget | None = None
    updated_at: float = 0.0
