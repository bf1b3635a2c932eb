"""Configuration of rate limits, budgets and the admin API (`limits:`, `admin:`, and the
`limits` / `budget` fields of a key or a tenant).

These models are imported by gateway/config.py; they import nothing of the gateway, so
the quota package can be read and tested on its own.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Period = Literal["day", "month", "total"]
FailMode = Literal["open", "closed"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RateLimits(_Strict):
    """Per key or per tenant. Absent (None) means no limit of that kind."""

    rpm: int | None = Field(None, ge=1)            # requests per window (60 s)
    tpm: int | None = Field(None, ge=1)            # tokens per window, reserved from the estimate
    max_parallel: int | None = Field(None, ge=1)   # requests in flight at once


class Budget(_Strict):
    """A spending budget in USD, priced from the telemetry price table."""

    usd: float = Field(gt=0)
    period: Period = "month"                       # day and month are UTC calendar periods


class TenantQuota(_Strict):
    limits: RateLimits = RateLimits()
    budget: Budget | None = None


class FailModes(_Strict):
    """What a request gets while Redis does not answer: `open` admits it uncounted,
    `closed` refuses it (503). A request under both kinds of limit follows the stricter."""

    rate: FailMode = "open"       # rpm, tpm, max_parallel
    budget: FailMode = "closed"


class LimitsConfig(_Strict):
    # Shared state for every replica. None: `cache.redis_url` if set, else in-process
    # (exact for one replica; each `--workers` process then counts on its own).
    redis_url: str | None = None
    key_prefix: str = "sluice:"
    # The rate window. 60 s is what rpm/tpm mean; tests shorten it to see several
    # windows in a few seconds (a test convenience, not a production setting).
    window_s: float = Field(60.0, gt=0, le=3600)
    # The output-token estimate for a request that sets no max_tokens (reserved against
    # tpm and the budget, settled to the provider's usage afterwards).
    default_max_tokens: int = Field(4096, ge=1)
    # A reservation never settled (its replica died) is released after this long; its
    # estimate then counts as spent. Also the longest a request holds a max_parallel slot.
    lease_s: float = Field(900.0, gt=0)
    timeout_s: float = Field(0.25, gt=0)           # one Redis call
    retry_after_s: float = Field(1.0, ge=0)        # after a failure, the fail mode decides this long
    key_cache_s: float = Field(0.5, gt=0, le=1.0)  # a virtual key's record is re-read this often
    settle_interval_s: float = Field(0.005, gt=0, le=1.0)   # settlements are batched this long
    fail: FailModes = FailModes()
    tenants: dict[str, TenantQuota] = {}
    metrics_max_keys: int = Field(100, ge=0)       # keys with a budget exported in /metrics

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix:// (a socket path)")
        return v


class AdminConfig(_Strict):
    # `Authorization: Bearer <master key>` or `x-api-key` on /admin/*; None: no admin API.
    master_key: str | None = Field(None, min_length=16)
