"""ClickHouse tables and their versioned migrations.

Tables (all in one database, `sluice` by default):

- `otel_traces`: one row per span, the same columns as the OpenTelemetry Collector's
  ClickHouse exporter table, so Grafana's trace views and existing queries work on it.
- `otel_traces_trace_id_ts` + `otel_traces_trace_id_ts_mv`: trace id -> time range, the
  lookup table the collector schema uses to find a trace by id quickly.
- `otel_traces_ingest` + `otel_traces_ingest_mv`: where Sluice's span exporter inserts. A
  Null table (it stores nothing) whose view writes each block into `otel_traces`, turning
  the attribute maps, sent as one JSON object per span, into `Map` columns. ClickHouse
  stringifies values in C++ (numbers, booleans, arrays as JSON) instead of the exporter
  doing it attribute by attribute in Python: tracing's largest single cost per request
  (docs/telemetry.md, "Cost of tracing"). Other writers (an OpenTelemetry Collector) keep
  inserting into `otel_traces` directly.
  Migration 5 drops the v1 skip indexes on attribute keys and resource attributes (they
  cannot skip anything given the sort order) and keeps fresh inserts in compact parts.
- `llm_requests`: the wide table, one row per gateway request (see `records.py`).
  Migration 6 adds `anomalies` (values stored other than as given, and what they were)
  and `ingest_client`/`ingest_seq` (which gateway process sent the row, its number there:
  a row resent after a collector crash is written once).
  Migration 7 adds `limited` (the gateway's limits refused the request: rate, budget,
  concurrency; "" when admitted).
  Migration 8 adds `prompt_fingerprint` (hash of system prompt + tool schemas),
  `response_format` ("" | json_object | json_schema), for the drift monitor, and `traffic`
  ('user' | 'evaluator': the monitor's own calls, left out of drift, reports and rollups).
- `drift_metrics`, `model_events`, `drift_baselines`: the drift monitor's output and pinned
  baselines (migration 9; columns and sort orders in `telemetry/drift_tables.py`).
- `llm_requests_1m`, `llm_guardrail_actions_1m` (+ their views): per-minute rollups the
  dashboards read instead of scanning every request row (migration 10, `telemetry/rollups.py`).
- `evaluations`: one row per (request, evaluator) of the hallucination evaluators,
  migration 11 (`telemetry/evaluations.py`).
- `feedback`: user feedback on answers (`POST /v1/feedback`, source `explicit`) and the
  gateway's implicit signals (regenerate, abandoned stream), migration 12
  (`telemetry/feedback.py`).
- `admin_audit`: one row per admin API action, who / what / when (migration 7,
  `telemetry/audit.py`); no TTL.
- `sluice_schema_migrations`: which migrations ran.

`migrate(client, database)` applies the missing migrations in order. Every statement is
idempotent (`IF NOT EXISTS`), so two replicas starting together, or a run interrupted
half-way, converge on the same schema; a migration is recorded only after all of its
statements succeeded. Migrations are append-only: never edit a released one, add a new
version.
"""

from __future__ import annotations

from telemetry.ddl import ttl_clause

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from clickhouse_connect.driver.client import Client

if TYPE_CHECKING:
    from telemetry.config import ClickHouseLayout

MIGRATIONS_TABLE = "sluice_schema_migrations"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# llm_requests columns with their ClickHouse types, in RequestRecord order.
REQUEST_COLUMN_TYPES: dict[str, str] = {
    "timestamp": "DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1))",
    "request_id": "String CODEC(ZSTD(1))",
    "trace_id": "String CODEC(ZSTD(1))",
    "span_id": "String CODEC(ZSTD(1))",
    "tenant": "LowCardinality(String)",
    "key_id": "LowCardinality(String)",
    "operation": "LowCardinality(String)",
    "api_format": "LowCardinality(String)",
    "public_model": "LowCardinality(String)",
    "provider": "LowCardinality(String)",
    "provider_type": "LowCardinality(String)",
    "deployment": "LowCardinality(String)",
    "upstream_model": "LowCardinality(String)",
    "response_model": "LowCardinality(String)",
    "system_fingerprint": "LowCardinality(String)",
    "status_code": "UInt16",
    "error_type": "LowCardinality(String)",
    "attempts": "UInt16",
    "fallback": "Bool",
    "latency_ms": "Float32",
    "ttft_ms": "Nullable(Float32)",
    "gateway_overhead_ms": "Nullable(Float32)",
    "input_tokens": "Nullable(UInt32)",
    "output_tokens": "Nullable(UInt32)",
    "cached_tokens": "Nullable(UInt32)",
    "cost_usd": "Nullable(Float64)",
    "cache_status": "LowCardinality(String)",
    "cache_similarity": "Nullable(Float32)",
    "guardrail_actions": "Array(LowCardinality(String))",
    "guardrail_latency_ms": "Nullable(Float32)",
    "prompt_text": "String CODEC(ZSTD(3))",
    "completion_text": "String CODEC(ZSTD(3))",
    "prompt_embedding": "Array(Float32) CODEC(ZSTD(1))",
    "finish_reason": "LowCardinality(String)",
    "stream": "Bool",
    "temperature": "Nullable(Float32)",
    "max_tokens": "Nullable(UInt32)",
    "user": "String CODEC(ZSTD(1))",
    "client_ip": "String CODEC(ZSTD(1))",
    "user_agent": "LowCardinality(String)",
    "limited": "LowCardinality(String)",
    "prompt_fingerprint": "LowCardinality(String)",
    "response_format": "LowCardinality(String)",
    "traffic": "LowCardinality(String) DEFAULT 'user'",
    "anomalies": "Map(LowCardinality(String), String) CODEC(ZSTD(1))",
    "ingest_client": "LowCardinality(String)",
    "ingest_seq": "UInt64 CODEC(Delta, ZSTD(1))",
}

# The columns of the first released llm_requests; v2 added the rest.
_V1_REQUEST_COLUMNS = (
    "timestamp", "request_id", "trace_id", "span_id", "tenant", "key_id", "operation",
    "public_model", "provider", "deployment", "upstream_model", "status_code", "error_type",
    "attempts", "fallback", "latency_ms", "ttft_ms", "input_tokens", "output_tokens",
    "cost_usd", "cache_status", "prompt_text", "completion_text", "finish_reason", "stream",
)



def _migrations_table(db: str, ttl_days: int) -> list[str]:
    return [
        f"CREATE DATABASE IF NOT EXISTS `{db}`",
        f"""CREATE TABLE IF NOT EXISTS `{db}`.{MIGRATIONS_TABLE} (
            version UInt32,
            name String,
            applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
        ) ENGINE = ReplacingMergeTree ORDER BY version""",
    ]


def _v1_initial(db: str, ttl_days: int) -> list[str]:
    request_cols = ",\n    ".join(f"`{c}` {REQUEST_COLUMN_TYPES[c]}" for c in _V1_REQUEST_COLUMNS)
    return [
        f"""CREATE TABLE IF NOT EXISTS `{db}`.otel_traces (
    Timestamp DateTime64(9) CODEC(Delta, ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ParentSpanId String CODEC(ZSTD(1)),
    TraceState String CODEC(ZSTD(1)),
    SpanName LowCardinality(String) CODEC(ZSTD(1)),
    SpanKind LowCardinality(String) CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion String CODEC(ZSTD(1)),
    SpanAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    Duration UInt64 CODEC(ZSTD(1)),
    StatusCode LowCardinality(String) CODEC(ZSTD(1)),
    StatusMessage String CODEC(ZSTD(1)),
    Events Nested (
        Timestamp DateTime64(9),
        Name LowCardinality(String),
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    Links Nested (
        TraceId String,
        SpanId String,
        TraceState String,
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_key mapKeys(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_value mapValues(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_duration Duration TYPE minmax GRANULARITY 1
) ENGINE = MergeTree
PARTITION BY toDate(Timestamp)
ORDER BY (ServiceName, SpanName, toDateTime(Timestamp))
{ttl_clause("Timestamp", ttl_days)}
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1""",
        f"""CREATE TABLE IF NOT EXISTS `{db}`.llm_requests (
    {request_cols},
    INDEX idx_trace_id trace_id TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_request_id request_id TYPE bloom_filter(0.001) GRANULARITY 1
) ENGINE = MergeTree
PARTITION BY toDate(timestamp)
ORDER BY (tenant, public_model, timestamp)
{ttl_clause("timestamp", ttl_days)}
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1""",
    ]


# The columns of v6 (v2 added everything else past v1).
_V6_REQUEST_COLUMNS = ("anomalies", "ingest_client", "ingest_seq")


def _v2_request_columns(db: str, ttl_days: int) -> list[str]:
    added = [c for c in REQUEST_COLUMN_TYPES
             if c not in _V1_REQUEST_COLUMNS and c not in _V6_REQUEST_COLUMNS and c not in _V7_REQUEST_COLUMNS
             and c not in _V8_REQUEST_COLUMNS]
    adds = ",\n    ".join(
        f"ADD COLUMN IF NOT EXISTS `{c}` {REQUEST_COLUMN_TYPES[c]}" for c in added
    )
    return [f"ALTER TABLE `{db}`.llm_requests\n    {adds}"]


def _v3_trace_id_lookup(db: str, ttl_days: int) -> list[str]:
    return [
        f"""CREATE TABLE IF NOT EXISTS `{db}`.otel_traces_trace_id_ts (
    TraceId String CODEC(ZSTD(1)),
    Start DateTime64(9) CODEC(Delta, ZSTD(1)),
    End DateTime64(9) CODEC(Delta, ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.01) GRANULARITY 1
) ENGINE = MergeTree
PARTITION BY toDate(Start)
ORDER BY (TraceId, Start)
{ttl_clause("Start", ttl_days)}
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1""",
        f"""CREATE MATERIALIZED VIEW IF NOT EXISTS `{db}`.otel_traces_trace_id_ts_mv
TO `{db}`.otel_traces_trace_id_ts
AS SELECT TraceId, min(Timestamp) AS Start, max(Timestamp) AS End
FROM `{db}`.otel_traces
WHERE TraceId != ''
GROUP BY TraceId""",
    ]


def _v4_span_ingest(db: str, ttl_days: int) -> list[str]:
    attrs = "Map(LowCardinality(String), String)"
    return [
        f"""CREATE TABLE IF NOT EXISTS `{db}`.otel_traces_ingest (
    Timestamp DateTime64(9),
    TraceId String,
    SpanId String,
    ParentSpanId String,
    TraceState String,
    SpanName LowCardinality(String),
    SpanKind LowCardinality(String),
    ServiceName LowCardinality(String),
    ResourceAttributesJson LowCardinality(String),
    ScopeName String,
    ScopeVersion String,
    SpanAttributesJson String,
    Duration UInt64,
    StatusCode LowCardinality(String),
    StatusMessage String,
    Events Nested (Timestamp DateTime64(9), Name LowCardinality(String), Attributes {attrs}),
    Links Nested (TraceId String, SpanId String, TraceState String, Attributes {attrs})
) ENGINE = Null""",
        f"""CREATE MATERIALIZED VIEW IF NOT EXISTS `{db}`.otel_traces_ingest_mv
TO `{db}`.otel_traces
AS SELECT Timestamp, TraceId, SpanId, ParentSpanId, TraceState, SpanName, SpanKind, ServiceName,
    JSONExtract(ResourceAttributesJson, '{attrs}') AS ResourceAttributes, ScopeName, ScopeVersion,
    JSONExtract(SpanAttributesJson, '{attrs}') AS SpanAttributes, Duration, StatusCode, StatusMessage,
    `Events.Timestamp`, `Events.Name`, `Events.Attributes`,
    `Links.TraceId`, `Links.SpanId`, `Links.TraceState`, `Links.Attributes`
FROM `{db}`.otel_traces_ingest""",
    ]


# Skip indexes of v1 that cost inserts and never skip: rows are ordered by (ServiceName,
# SpanName, time), so every granule of a span name holds the same attribute keys, and the
# resource attributes are the same for every span of an instance. Measured on chDB with
# 20,000-span inserts: these three plus wide parts were ~25% of the engine's CPU per span
# (docs/telemetry.md, "Cost of tracing"). The index on attribute values stays (a search
# by request or response id skips granules with it), as does the one on trace ids.
_V5_DROPPED_INDEXES = ("idx_res_attr_key", "idx_res_attr_value", "idx_span_attr_key")
# A fresh insert of 20,000 spans is ~10 MB: with the default (10 MB) it becomes a wide part
# of ~130 files. Compact parts (one data file) until merges reach this size.
_V5_WIDE_PART_BYTES = 64 * 1024 * 1024


def _v5_span_insert_cost(db: str, ttl_days: int) -> list[str]:
    drops = ", ".join(f"DROP INDEX IF EXISTS {name}" for name in _V5_DROPPED_INDEXES)
    return [
        f"ALTER TABLE `{db}`.otel_traces {drops}",
        f"ALTER TABLE `{db}`.otel_traces MODIFY SETTING min_bytes_for_wide_part = {_V5_WIDE_PART_BYTES}",
    ]


def _v6_delivery(db: str, ttl_days: int) -> list[str]:
    """`anomalies`: values stored other than as given (clamped, NULL, replaced), column ->
    the value it had. `ingest_client`, `ingest_seq`: who sent the row and its number there,
    so a row resent after a collector crash is written once; the bloom filter lets that
    look-up skip the granules of every other gateway process."""
    adds = ",\n    ".join(
        f"ADD COLUMN IF NOT EXISTS `{c}` {REQUEST_COLUMN_TYPES[c]}" for c in _V6_REQUEST_COLUMNS)
    return [
        f"ALTER TABLE `{db}`.llm_requests\n    {adds}",
        f"ALTER TABLE `{db}`.llm_requests ADD INDEX IF NOT EXISTS idx_ingest_client ingest_client "
        f"TYPE bloom_filter(0.01) GRANULARITY 1",
    ]


# The column of v7.
_V7_REQUEST_COLUMNS = ("limited",)


def _v7_limits(db: str, ttl_days: int) -> list[str]:
    """`limited`: which of the gateway's limits refused the request (issue 22); and the
    admin API's audit trail, `admin_audit` (telemetry/audit.py)."""
    from telemetry.audit import audit_table_sql
    return [
        f"ALTER TABLE `{db}`.llm_requests ADD COLUMN IF NOT EXISTS `limited` {REQUEST_COLUMN_TYPES['limited']}",
        audit_table_sql(db),
    ]


# The columns of v8.
_V8_REQUEST_COLUMNS = ("prompt_fingerprint", "response_format", "traffic")


def _v8_prompt_fingerprint(db: str, ttl_days: int) -> list[str]:
    """`prompt_fingerprint`: hash of the system prompt + tool schemas, so the drift monitor
    segments by application prompt version (issue 23); `response_format`: "" | json_object
    | json_schema, the requests whose answers the monitor checks for valid JSON; `traffic`:
    'user', or 'evaluator' for the monitor's own re-asks and judge calls (made with
    `monitoring.evaluator_key`), which drift, reports and the rollups leave out."""
    adds = ",\n    ".join(
        f"ADD COLUMN IF NOT EXISTS `{c}` {REQUEST_COLUMN_TYPES[c]}" for c in _V8_REQUEST_COLUMNS)
    return [f"ALTER TABLE `{db}`.llm_requests\n    {adds}"]


def _v9_drift(db: str, ttl_days: int) -> list[str]:
    """The drift monitor's tables (issue 23): `drift_metrics`, `model_events` and
    `drift_baselines` (layout and rows in telemetry/drift_tables.py)."""
    from telemetry.drift_tables import drift_tables_sql
    return drift_tables_sql(db, ttl_days)


def _v10_rollups(db: str, ttl_days: int) -> list[str]:
    """Per-minute rollups of users' `llm_requests` for the dashboards (issue 25;
    telemetry/rollups.py)."""
    from telemetry.rollups import rollup_tables_sql
    return rollup_tables_sql(db, ttl_days)


def _v11_evaluations(db: str, ttl_days: int) -> list[str]:
    """The hallucination evaluators' `evaluations` table (issue 24; telemetry/evaluations.py)."""
    from telemetry.evaluations import evaluations_table_sql
    return evaluations_table_sql(db, ttl_days)


def _v12_feedback(db: str, ttl_days: int) -> list[str]:
    """`feedback` (issue 24): explicit ratings from `POST /v1/feedback` and the gateway's
    implicit signals, one row each (telemetry/feedback.py)."""
    from telemetry.feedback import feedback_table_sql
    return feedback_table_sql(db, ttl_days)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: Callable[[str, int], list[str]]   # (database, ttl_days) -> SQL


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "otel_traces and llm_requests", _v1_initial),
    Migration(2, "llm_requests: routing, cache, guardrail, overhead, embedding columns",
              _v2_request_columns),
    Migration(3, "otel_traces_trace_id_ts lookup table and view", _v3_trace_id_lookup),
    Migration(4, "otel_traces_ingest: span attributes as JSON, mapped by a view", _v4_span_ingest),
    Migration(5, "otel_traces: drop skip indexes that never skip, compact parts for inserts",
              _v5_span_insert_cost),
    Migration(6, "llm_requests: anomalies map, ingest client and sequence (exactly-once rows)",
              _v6_delivery),
    Migration(7, "llm_requests: limited; admin_audit table", _v7_limits),
    Migration(8, "llm_requests: prompt_fingerprint, response_format, traffic", _v8_prompt_fingerprint),
    Migration(9, "drift_metrics, model_events, drift_baselines (the drift monitor)", _v9_drift),
    Migration(10, "llm_requests_1m, llm_guardrail_actions_1m: per-minute rollups for dashboards", _v10_rollups),
    Migration(11, "evaluations (hallucination evaluators)", _v11_evaluations),
    Migration(12, "feedback (explicit and implicit signals on answers)", _v12_feedback),
)
CURRENT_VERSION = MIGRATIONS[-1].version


def _check_ident(database: str) -> None:
    if not _IDENT.match(database):
        raise ValueError(f"invalid ClickHouse database name: {database!r}")


def current_version(client: Client, database: str) -> int:
    """The highest applied migration, 0 for an empty database."""
    _check_ident(database)
    exists = client.command(
        f"EXISTS TABLE `{database}`.{MIGRATIONS_TABLE}"
    )
    if not int(exists):
        return 0
    return int(client.command(f"SELECT max(version) FROM `{database}`.{MIGRATIONS_TABLE}") or 0)


def migrate(
    client: Client, database: str, *, ttl_days: int = 30, target: int | None = None,
    cluster: "ClickHouseLayout | None" = None,
) -> list[int]:
    """Bring `database` up to `target` (default: the latest); return the versions applied.
    With `cluster.cluster` set, every statement is rewritten for the cluster
    (telemetry/cluster_ddl.py: ON CLUSTER, Replicated and Distributed tables)."""
    _check_ident(database)
    rewrite = _cluster_rewrite(database, ttl_days, cluster)
    for sql in _migrations_table(database, ttl_days):
        for statement in rewrite(sql):
            client.command(statement)
    have = current_version(client, database)
    want = CURRENT_VERSION if target is None else target
    applied: list[int] = []
    for m in MIGRATIONS:
        if m.version <= have or m.version > want:
            continue
        for sql in m.statements(database, ttl_days):
            for statement in rewrite(sql):
                client.command(statement)
        client.insert(
            f"{MIGRATIONS_TABLE}", [[m.version, m.name]],
            column_names=["version", "name"], database=database,
        )
        applied.append(m.version)
    return applied


def _cluster_rewrite(database: str, ttl_days: int,
                     cluster: "ClickHouseLayout | None") -> Callable[[str], list[str]]:
    """Each statement as is on one server; rewritten for a cluster (cluster_ddl.py)."""
    if cluster is None or not cluster.cluster:
        return lambda sql: [sql]
    from telemetry.cluster_ddl import ClusterDDL
    every = [*_migrations_table(database, ttl_days),
             *(sql for m in MIGRATIONS for sql in m.statements(database, ttl_days))]
    return ClusterDDL(cluster, every).rewrite


def cluster_statements(database: str, cluster: "ClickHouseLayout", *, ttl_days: int = 30) -> list[str]:
    """Every statement a fresh cluster runs, in order (for review and for the tests)."""
    rewrite = _cluster_rewrite(database, ttl_days, cluster)
    sqls = [*_migrations_table(database, ttl_days),
            *(sql for m in MIGRATIONS for sql in m.statements(database, ttl_days))]
    return [statement for sql in sqls for statement in rewrite(sql)]
