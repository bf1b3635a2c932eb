"""SQL fragments the ClickHouse dashboards share: tables, buckets, filters.

Panels over long ranges read the per-minute rollups (telemetry/rollups.py); a bucket is
never finer than their minute, so `$__interval_s` below 60 rounds up to a minute.
"""

from __future__ import annotations

from dashboards.board import segment_filter

REQUESTS = "${database}.llm_requests"
REQUESTS_1M = "${database}.llm_requests_1m"
GUARDRAILS_1M = "${database}.llm_guardrail_actions_1m"
SPANS = "${database}.otel_traces"
DRIFT = "${database}.drift_metrics"
EVENTS = "${database}.model_events"
EVALUATIONS = "${database}.evaluations"
FEEDBACK = "${database}.feedback"

STEP = "greatest($__interval_s, 60)"
BUCKET = f"toStartOfInterval(minute, INTERVAL {STEP} second)"
SEGMENTS = segment_filter()
IN_RANGE_1M = f"$__timeFilter(minute) AND {SEGMENTS}"
IN_RANGE = f"$__timeFilter(timestamp) AND {SEGMENTS}"
SERVER_ERROR = "status_code >= 500"


def quantiles(state: str, where: str = IN_RANGE_1M, table: str = REQUESTS_1M) -> str:
    """p50 / p95 / p99 per bucket from a t-digest state column of the rollup."""
    return f"""SELECT time, q[1] AS p50, q[2] AS p95, q[3] AS p99 FROM (
    SELECT {BUCKET} AS time, quantilesTDigestMerge(0.5, 0.95, 0.99)({state}) AS q
    FROM {table}
    WHERE {where}
    GROUP BY time)
ORDER BY time"""
