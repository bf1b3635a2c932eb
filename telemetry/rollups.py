"""Per-minute rollups of `llm_requests` for the dashboards (migration 10, telemetry/schema.py).

A dashboard over 30 days of a busy gateway would otherwise scan 100M request rows per
panel refresh. Materialized views fold each inserted block into per-minute rows as it
lands, so a panel reads a few rows per minute and segment instead:

- `llm_requests_1m`: requests, tokens, cost, attempts and fallbacks as sums (`*_total`), and
  latency, TTFT, gateway overhead and guardrail time as t-digest quantile states (`*_q`), per minute and
  (tenant, key, public model, deployment, provider, status code, error type, cache status,
  limit). Read with `sum(...)` and `quantilesTDigestMerge(0.5, 0.95, 0.99)(...)`. (The
  suffixes keep the view's aliases apart from the source columns it aggregates.)
- `llm_guardrail_actions_1m`: one count per minute, segment, guardrail, stage and action
  label (`block`, `mask`, `error`, `error.busy`, `block.oversize`, ...), from the request
  rows' `guardrail_actions`.

Only users' traffic is folded in: the monitor's own calls (`traffic = 'evaluator'`) are
not requests anyone made. The views start counting at the migration: rows written before it are not folded in
(panels reading a rollup show nothing before that minute; raw-table panels still do).
Dimensions are the low-cardinality columns only; every non-aggregate column is part of the
sort key, which is what lets AggregatingMergeTree merge rows of the same minute and segment.
"""

from __future__ import annotations

from telemetry.ddl import ttl_clause

REQUESTS_1M = "llm_requests_1m"
GUARDRAILS_1M = "llm_guardrail_actions_1m"
QUANTILES = "0.5, 0.95, 0.99"

_DIMENSIONS = ("tenant", "key_id", "public_model", "deployment", "provider", "status_code",
               "error_type", "cache_status", "limited")
_DIMENSION_TYPES = {"status_code": "UInt16"}

_SUMS: dict[str, tuple[str, str]] = {          # column -> (type, expression over llm_requests)
    "requests": ("UInt64", "count()"),
    "streams": ("UInt64", "countIf(stream)"),
    "fallbacks": ("UInt64", "countIf(fallback)"),
    "attempts_total": ("UInt64", "sum(toUInt64(attempts))"),
    "input_tokens_total": ("UInt64", "sum(toUInt64(ifNull(input_tokens, 0)))"),
    "output_tokens_total": ("UInt64", "sum(toUInt64(ifNull(output_tokens, 0)))"),
    "cached_tokens_total": ("UInt64", "sum(toUInt64(ifNull(cached_tokens, 0)))"),
    "cost_usd_total": ("Float64", "sum(ifNull(cost_usd, 0))"),
    "priced": ("UInt64", "countIf(cost_usd IS NOT NULL)"),
    "latency_ms_sum": ("Float64", "sum(toFloat64(latency_ms))"),
}
_QUANTILE_STATES = {                            # column -> source column (Nullable: NULLs skipped)
    "latency_ms_q": ("Float32", "latency_ms"),
    "ttft_ms_q": ("Nullable(Float32)", "ttft_ms"),
    "overhead_ms_q": ("Nullable(Float32)", "gateway_overhead_ms"),
    "guardrail_ms_q": ("Nullable(Float32)", "guardrail_latency_ms"),
}



def rollup_tables_sql(db: str, ttl_days: int) -> list[str]:
    """CREATE statements of the two rollup tables and their views (idempotent)."""
    dims = ",\n    ".join(f"{c} {_DIMENSION_TYPES.get(c, 'LowCardinality(String)')}" for c in _DIMENSIONS)
    sums = ",\n    ".join(f"{c} SimpleAggregateFunction(sum, {t})" for c, (t, _) in _SUMS.items())
    states = ",\n    ".join(f"{c} AggregateFunction(quantilesTDigest({QUANTILES}), {t})"
                            for c, (t, _) in _QUANTILE_STATES.items())
    key = ", ".join(("minute", *_DIMENSIONS))
    sum_exprs = ",\n    ".join(f"{expr} AS {c}" for c, (_, expr) in _SUMS.items())
    state_exprs = ",\n    ".join(f"quantilesTDigestState({QUANTILES})({src}) AS {c}"
                                 for c, (_, src) in _QUANTILE_STATES.items())
    return [
        f"""CREATE TABLE IF NOT EXISTS `{db}`.{REQUESTS_1M} (
    minute DateTime('UTC'),
    {dims},
    {sums},
    {states}
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY ({key})
{ttl_clause("minute", ttl_days)}""",
        f"""CREATE MATERIALIZED VIEW IF NOT EXISTS `{db}`.{REQUESTS_1M}_mv TO `{db}`.{REQUESTS_1M}
AS SELECT toStartOfMinute(timestamp) AS minute, {", ".join(_DIMENSIONS)},
    {sum_exprs},
    {state_exprs}
FROM `{db}`.llm_requests
WHERE traffic = 'user'
GROUP BY {key}""",
        f"""CREATE TABLE IF NOT EXISTS `{db}`.{GUARDRAILS_1M} (
    minute DateTime('UTC'),
    tenant LowCardinality(String),
    public_model LowCardinality(String),
    deployment LowCardinality(String),
    guardrail LowCardinality(String),
    stage LowCardinality(String),
    action LowCardinality(String),
    requests SimpleAggregateFunction(sum, UInt64)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, tenant, public_model, deployment, guardrail, stage, action)
{ttl_clause("minute", ttl_days)}""",
        # "pii:mask" -> (pii, input, mask); "pii.output:redact" -> (pii, output, redact).
        f"""CREATE MATERIALIZED VIEW IF NOT EXISTS `{db}`.{GUARDRAILS_1M}_mv TO `{db}`.{GUARDRAILS_1M}
AS SELECT toStartOfMinute(timestamp) AS minute, tenant, public_model, deployment,
    replaceRegexpOne(splitByChar(':', entry)[1], '\\\\.output$', '') AS guardrail,
    if(endsWith(splitByChar(':', entry)[1], '.output'), 'output', 'input') AS stage,
    if(position(entry, ':') > 0, substring(entry, position(entry, ':') + 1), 'flag') AS action,
    count() AS requests
FROM `{db}`.llm_requests
ARRAY JOIN guardrail_actions AS entry
WHERE traffic = 'user'
GROUP BY minute, tenant, public_model, deployment, guardrail, stage, action""",
    ]
