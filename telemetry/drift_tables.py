"""The drift monitor's tables (migration 9, telemetry/schema.py) and their rows.

- `drift_metrics`: one row per run, segment and metric. Sorted by (metric, segment, time):
  the dashboards read one metric over time for a few segments, and the runner reads the
  previous runs of one segment's metrics for `alert_after_runs`. `value`/`baseline` are
  NULL when they could not be computed (`note` says why); `threshold` is the limit the
  value was compared with (for change metrics: the baseline moved by the allowed change),
  so a panel plots value against threshold without knowing the rule. `crossed`: the
  threshold was crossed in this run; `alerting`: crossed in `alert_after_runs` runs in a row.
- `model_events`: one row per new value of `response_model`, `system_fingerprint` or
  `prompt_fingerprint` in a segment, the first run that sees it. No TTL: these rows are
  the monitor's memory of the values it has seen (a value that expired would be new again).
- `drift_baselines`: pinned baselines (`sluice monitor baseline set`), the latest pin per
  segment pattern wins (ReplacingMergeTree on `pinned_at`); "" in a dimension matches any
  value. A pin names a time range of `llm_requests`, so it lasts as long as those rows
  (telemetry.ttl_days). No TTL.
"""

from __future__ import annotations

from telemetry.ddl import ttl_clause

from dataclasses import dataclass, fields
from datetime import datetime

DRIFT_METRICS = "drift_metrics"
MODEL_EVENTS = "model_events"
DRIFT_BASELINES = "drift_baselines"

_SEGMENT_COLUMNS = """    public_model LowCardinality(String),
    deployment LowCardinality(String),
    tenant LowCardinality(String),"""



def drift_tables_sql(db: str, ttl_days: int) -> list[str]:
    """CREATE statements of the three tables (idempotent)."""
    return [
        f"""CREATE TABLE IF NOT EXISTS `{db}`.{DRIFT_METRICS} (
    ts DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    window_start DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    window_end DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    baseline_start DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    baseline_end DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
{_SEGMENT_COLUMNS}
    prompt_fingerprint LowCardinality(String),
    metric LowCardinality(String),
    method LowCardinality(String),
    value Nullable(Float64),
    baseline Nullable(Float64),
    threshold Float64,
    crossed UInt8,
    alerting UInt8,
    n_current UInt32,
    n_baseline UInt32,
    note String CODEC(ZSTD(1))
) ENGINE = MergeTree
PARTITION BY toDate(ts)
ORDER BY (metric, public_model, deployment, tenant, prompt_fingerprint, ts)
{ttl_clause("ts", ttl_days)}
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1""",
        f"""CREATE TABLE IF NOT EXISTS `{db}`.{MODEL_EVENTS} (
    ts DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
{_SEGMENT_COLUMNS}
    kind LowCardinality(String),
    old_value String,
    new_value String,
    first_seen DateTime64(3, 'UTC'),
    requests_since UInt64,
    alerting UInt8
) ENGINE = MergeTree
ORDER BY (public_model, deployment, tenant, kind, first_seen)""",
        f"""CREATE TABLE IF NOT EXISTS `{db}`.{DRIFT_BASELINES} (
    pinned_at DateTime64(3, 'UTC'),
{_SEGMENT_COLUMNS}
    prompt_fingerprint LowCardinality(String),
    baseline_start DateTime64(3, 'UTC'),
    baseline_end DateTime64(3, 'UTC'),
    active UInt8,
    note String
) ENGINE = ReplacingMergeTree(pinned_at)
ORDER BY (public_model, deployment, tenant, prompt_fingerprint)""",
    ]


@dataclass(slots=True)
class DriftRow:
    """One row of drift_metrics (field order = column order)."""

    ts: datetime
    window_start: datetime
    window_end: datetime
    baseline_start: datetime
    baseline_end: datetime
    public_model: str
    deployment: str
    tenant: str
    prompt_fingerprint: str
    metric: str
    method: str
    value: float | None
    baseline: float | None
    threshold: float
    crossed: int
    alerting: int
    n_current: int
    n_baseline: int
    note: str

    def as_row(self) -> tuple:
        return tuple(getattr(self, name) for name in DRIFT_COLUMNS)   # astuple deep-copies: 10x slower


@dataclass(slots=True)
class ModelEvent:
    """One row of model_events (field order = column order)."""

    ts: datetime
    public_model: str
    deployment: str
    tenant: str
    kind: str
    old_value: str
    new_value: str
    first_seen: datetime
    requests_since: int
    alerting: int

    def as_row(self) -> tuple:
        return tuple(getattr(self, name) for name in EVENT_COLUMNS)


DRIFT_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(DriftRow))
EVENT_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(ModelEvent))
BASELINE_COLUMNS: tuple[str, ...] = ("pinned_at", "public_model", "deployment", "tenant", "prompt_fingerprint",
                                     "baseline_start", "baseline_end", "active", "note")
