"""Guardrails (ClickHouse): what they block, redact and mask, by guardrail and entity
type, what they cost in latency, and how often they fail open or closed."""

from __future__ import annotations

from dashboards.board import DashboardSpec
from dashboards.panels import ClickHousePanel as P
from dashboards.sql import BUCKET, GUARDRAILS_1M, IN_RANGE_1M, REQUESTS_1M, SPANS, STEP, quantiles

FAIL_CLOSED = "error_type = 'guardrail_unavailable'"      # a failed guardrail whose policy fails closed: 503
BLOCKED = "error_type = 'guardrail_blocked'"

ROWS = [
    ("Outcomes", [
        P("Blocked requests", "stat", f"""SELECT sumIf(requests, {BLOCKED}) AS blocked,
    sumIf(requests, {BLOCKED}) / greatest(sum(requests), 1) AS blocked_share
FROM {REQUESTS_1M} WHERE {IN_RANGE_1M}""", width=8, height=4),
        P("Fail-closed refusals (503)", "stat", f"SELECT sumIf(requests, {FAIL_CLOSED}) AS fail_closed "
          f"FROM {REQUESTS_1M} WHERE {IN_RANGE_1M}", unit="short", width=8, height=4),
        P("Guardrail errors (timeouts, busy, failures)", "stat",
          f"SELECT sumIf(requests, startsWith(action, 'error')) AS guardrail_errors FROM {GUARDRAILS_1M} "
          f"WHERE {IN_RANGE_1M}", unit="short", width=8, height=4),
        P("Actions per second by guardrail and action", "timeseries", f"""SELECT {BUCKET} AS time,
    concat(guardrail, if(stage = 'output', '.output', ''), ' ', action) AS series, sum(requests) / {STEP} AS per_s
FROM {GUARDRAILS_1M}
WHERE {IN_RANGE_1M} AND action != 'pass'
GROUP BY time, series
ORDER BY time""", unit="ops", width=24),
        P("Blocks, redactions and masks by guardrail", "barchart", f"""SELECT concat(guardrail, ' (', stage, ')') AS guardrail_stage,
    sumIf(requests, startsWith(action, 'block')) AS blocks,
    sumIf(requests, startsWith(action, 'redact')) AS redactions,
    sumIf(requests, startsWith(action, 'mask')) AS masks,
    sumIf(requests, startsWith(action, 'flag')) AS flags
FROM {GUARDRAILS_1M}
WHERE {IN_RANGE_1M}
GROUP BY guardrail_stage
ORDER BY blocks + redactions + masks DESC"""),
        P("Detected entity types", "barchart", f"""SELECT concat(splitByChar('.', key)[3], ' ', splitByChar('.', key)[4]) AS entity_type,
    sum(toUInt64OrZero(value)) AS detections
FROM {SPANS}
ARRAY JOIN mapKeys(SpanAttributes) AS key, mapValues(SpanAttributes) AS value
WHERE $__timeFilter(Timestamp) AND SpanName IN ('sluice.guardrail.input', 'sluice.guardrail.output')
    AND startsWith(key, 'sluice.guardrail.') AND length(splitByChar('.', key)) = 4 AND key != 'sluice.guardrail.actions'
GROUP BY entity_type
ORDER BY detections DESC
LIMIT 30""", description="Counts of entities per type from the guardrail spans (never the values). "
          "Spans carry no tenant: this panel ignores the segment variables."),
    ]),
    ("Latency and failures", [
        P("Guardrail time per request p50 / p95 / p99", "timeseries", quantiles("guardrail_ms_q"), unit="ms"),
        P("Fail open and fail closed", "timeseries", f"""SELECT * FROM (
    SELECT {BUCKET} AS time, 'fail-closed (503)' AS outcome, sumIf(requests, {FAIL_CLOSED}) / {STEP} AS per_s
    FROM {REQUESTS_1M}
    WHERE {IN_RANGE_1M}
    GROUP BY time
    UNION ALL
    SELECT {BUCKET} AS time, concat('guardrail ', action) AS outcome, sum(requests) / {STEP} AS per_s
    FROM {GUARDRAILS_1M}
    WHERE {IN_RANGE_1M} AND startsWith(action, 'error')
    GROUP BY time, outcome)
ORDER BY time""", unit="ops", description="Guardrail errors under a fail-open policy pass the content "
          "unscanned; under fail-closed they become the 503s."),
        P("Actions by tenant", "table", f"""SELECT tenant, guardrail, stage, action, sum(requests) AS n_requests
FROM {GUARDRAILS_1M}
WHERE {IN_RANGE_1M} AND action != 'pass'
GROUP BY tenant, guardrail, stage, action
ORDER BY n_requests DESC
LIMIT 50""", width=24),
    ]),
]


def spec() -> DashboardSpec:
    return DashboardSpec(
        uid="sluice-guardrails", title="Sluice / Guardrails",
        description="Blocks, redactions and masks by guardrail and entity type; latency; fail-open/closed (ClickHouse).",
        tags=("sluice", "clickhouse", "guardrails"), rows=ROWS)
