"""`feedback`: what users (explicit) and their behaviour (implicit) said about an answer.

One row per signal, written off the request path through the telemetry connection that
writes `llm_requests` (the in-process writers' client, or the collector's, like the
`admin_audit` rows): `POST /v1/feedback` (source `explicit`) and the gateway's own
implicit signals (source `implicit`: a `regenerate`, an `abandon`ed stream).

`score` is in [0, 1], higher is better (thumbs up 1, down 0); NULL when the signal carries
no rating (a comment or a report alone, an abandoned stream: the user may have read
enough). `public_model`, `deployment` and `prompt_fingerprint` are copied from the rated
request's row, so reports and the drift runner group feedback by segment without joining
`llm_requests` (which may have expired first).
"""

from __future__ import annotations

from telemetry.ddl import ttl_clause

from dataclasses import astuple, dataclass, fields
from datetime import datetime

FEEDBACK_TABLE = "feedback"



def feedback_table_sql(db: str, ttl_days: int) -> list[str]:
    """CREATE statement of `feedback` (idempotent). Sorted by (tenant, public_model, ts):
    reports read one tenant's or model's feedback over time; the bloom filter finds the
    feedback of one request."""
    return [f"""CREATE TABLE IF NOT EXISTS `{db}`.{FEEDBACK_TABLE} (
    ts DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    feedback_id String CODEC(ZSTD(1)),
    request_id String CODEC(ZSTD(1)),
    trace_id String CODEC(ZSTD(1)),
    tenant LowCardinality(String),
    key_id LowCardinality(String),
    user String CODEC(ZSTD(1)),
    source LowCardinality(String),
    kind LowCardinality(String),
    score Nullable(Float64),
    comment String CODEC(ZSTD(3)),
    correction String CODEC(ZSTD(3)),
    public_model LowCardinality(String),
    deployment LowCardinality(String),
    prompt_fingerprint LowCardinality(String),
    INDEX idx_request_id request_id TYPE bloom_filter(0.001) GRANULARITY 1
) ENGINE = MergeTree
PARTITION BY toDate(ts)
ORDER BY (tenant, public_model, ts)
{ttl_clause("ts", ttl_days)}
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1"""]


@dataclass(slots=True)
class FeedbackRow:
    """One row of `feedback` (field order = column order)."""

    ts: datetime
    feedback_id: str
    request_id: str
    trace_id: str
    tenant: str
    key_id: str
    user: str
    source: str                  # explicit | implicit
    kind: str                    # rating, accept, copy, report, ... | regenerate, abandon
    score: float | None
    comment: str
    correction: str
    public_model: str
    deployment: str
    prompt_fingerprint: str

    def as_row(self) -> tuple:
        return astuple(self)


FEEDBACK_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(FeedbackRow))
