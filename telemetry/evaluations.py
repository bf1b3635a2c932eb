"""The `evaluations` table (telemetry/schema.py, migration 11) and its rows.

One row per (evaluated request, evaluator): `score` in [0, 1], higher is better, NULL when
the evaluator could not score (label `error`: a judge that answered garbage twice, a
gateway that refused the re-ask); `label` a word a dashboard can count (`supported`,
`unsupported`, `consistent`, `pass`, `fail`, `win`, `tie`, `error`, ...); `details` a JSON
object (the unsupported sentences, the judge's critique, the failed check); `cost_usd`
what the evaluation itself cost (the model calls it made, 0 for local evaluators), which
the daily budgets are read back from. `evaluator_id` identifies the configuration
(`evaluators.config.evaluator_id`): a changed rubric or judge model is a new series, not
a jump in the old one.

Sorted by (evaluator, public_model, ts): dashboards read one evaluator over time per
model; the sampler reads back which requests an evaluator already did (bloom filter on
request_id).
"""

from __future__ import annotations

from telemetry.ddl import ttl_clause

from dataclasses import astuple, dataclass, fields
from datetime import datetime

EVALUATIONS = "evaluations"



def evaluations_table_sql(db: str, ttl_days: int) -> list[str]:
    """CREATE statement of `evaluations` (idempotent)."""
    return [f"""CREATE TABLE IF NOT EXISTS `{db}`.{EVALUATIONS} (
    ts DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    request_id String CODEC(ZSTD(1)),
    trace_id String CODEC(ZSTD(1)),
    public_model LowCardinality(String),
    deployment LowCardinality(String),
    tenant LowCardinality(String),
    prompt_fingerprint LowCardinality(String),
    evaluator LowCardinality(String),
    evaluator_id LowCardinality(String),
    score Nullable(Float64),
    label LowCardinality(String),
    details String CODEC(ZSTD(3)),
    latency_ms Float32,
    cost_usd Float64,
    INDEX idx_request_id request_id TYPE bloom_filter(0.001) GRANULARITY 1
) ENGINE = MergeTree
PARTITION BY toDate(ts)
ORDER BY (evaluator, public_model, ts)
{ttl_clause("ts", ttl_days)}
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1"""]


@dataclass(slots=True)
class EvaluationRow:
    """One row of `evaluations` (field order = column order)."""

    ts: datetime
    request_id: str
    trace_id: str
    public_model: str
    deployment: str
    tenant: str
    prompt_fingerprint: str
    evaluator: str
    evaluator_id: str
    score: float | None
    label: str
    details: str
    latency_ms: float
    cost_usd: float

    def as_row(self) -> tuple:
        return astuple(self)


EVALUATION_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(EvaluationRow))
