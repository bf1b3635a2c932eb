"""The `feedback:` section of `sluice.yaml` (docs/monitoring.md, "Feedback").

    feedback:
      lookup_timeout_s: 2          # ClickHouse look-up of the rated request; 503 past it
      implicit:
        regenerate_window_s: 600   # the same conversation re-sent within this: a regenerate
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImplicitSignals(_Strict):
    """Signals the gateway derives from traffic, stored with `source = implicit`."""

    # The same conversation prefix (the messages up to the last user turn, the system prompt
    # included) re-sent by the same key and user within `regenerate_window_s` of an answered
    # request: that earlier answer was regenerated (kind `regenerate`, score 0).
    regenerate: bool = True
    regenerate_window_s: float = Field(600.0, gt=0)
    # Conversations remembered per process (an LRU); the oldest are forgotten first.
    regenerate_max_entries: int = Field(20_000, ge=1)
    # Only requests that name their end user (OpenAI `user`, Anthropic `metadata.user_id`):
    # without one, two people asking the same question through one key look like a regenerate.
    require_user: bool = True
    # Where the remembered conversations live: None keeps them in this process's memory
    # (a regenerate landing on another replica or worker is not seen); a Redis URL shares
    # them between replicas (one SET ... GET per remembered request, off the request path).
    redis_url: str | None = None
    # A stream the client left before its end (status 499): kind `abandon`, no score.
    abandon: bool = True

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return v


class FeedbackConfig(_Strict):
    """`POST /v1/feedback` (served while telemetry is on) and the implicit signals."""

    enabled: bool = True
    # The rated request's tenant is read from `llm_requests` off the event loop; past this
    # (ClickHouse down or slow) the caller gets a 503 with Retry-After.
    lookup_timeout_s: float = Field(2.0, gt=0)
    # Requests this process answered, remembered (an LRU) so feedback on them is verified
    # before their row is written (rows are batched: up to telemetry.flush_interval_s).
    recent_requests: int = Field(10_000, ge=0)
    max_comment_chars: int = Field(4000, ge=0)
    max_correction_chars: int = Field(16_000, ge=0)
    max_user_chars: int = Field(256, ge=1)
    # Feedback rows waiting to be written while ClickHouse is slow or down; past it they
    # are dropped, logged and counted.
    queue_max: int = Field(10_000, ge=1)
    implicit: ImplicitSignals = ImplicitSignals()
