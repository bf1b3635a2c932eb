"""Traffic and latency (ClickHouse): the on-call view over long ranges, by deployment and
tenant, with the failing deployments and the slowest prompts."""

from __future__ import annotations

from dashboards.board import DashboardSpec
from dashboards.panels import ClickHousePanel as P
from dashboards.sql import BUCKET, IN_RANGE, IN_RANGE_1M, REQUESTS, REQUESTS_1M, SERVER_ERROR, SPANS, STEP, quantiles

# Upstream attempt spans carry the deployment and the attempt's outcome ("ok", "http_500", "timeout", ...).
DEPLOYMENT = "SpanAttributes['sluice.deployment']"
OUTCOME = "SpanAttributes['sluice.attempt.outcome']"
ATTEMPTS = (f"$__timeFilter(Timestamp) AND mapContains(SpanAttributes, 'sluice.attempt') "
            f"AND $__conditionalAll({DEPLOYMENT} IN (${{deployment:singlequote}}), $deployment)")


def _per_second(series: str) -> str:
    return f"""SELECT {BUCKET} AS time, if({series} = '', '(none)', {series}) AS segment, sum(requests) / {STEP} AS rps
FROM {REQUESTS_1M}
WHERE {IN_RANGE_1M}
GROUP BY time, segment
ORDER BY time"""


ROWS = [
    ("Overview", [
        P("Requests", "stat", f"SELECT sum(requests) AS n_requests FROM {REQUESTS_1M} WHERE {IN_RANGE_1M}",
          unit="short", width=6, height=4),
        P("Server error rate", "stat",
          f"SELECT sumIf(requests, {SERVER_ERROR}) / greatest(sum(requests), 1) AS error_rate "
          f"FROM {REQUESTS_1M} WHERE {IN_RANGE_1M}", unit="percentunit", width=6, height=4),
        P("Fallback rate", "stat",
          f"SELECT sum(fallbacks) / greatest(sum(requests), 1) AS fallback_rate FROM {REQUESTS_1M} "
          f"WHERE {IN_RANGE_1M}", unit="percentunit", width=6, height=4),
        P("Mean latency", "stat",
          f"SELECT sum(latency_ms_sum) / greatest(sum(requests), 1) AS mean_latency_ms FROM {REQUESTS_1M} "
          f"WHERE {IN_RANGE_1M}", unit="ms", width=6, height=4),
        P("Requests/s by public model", "timeseries", _per_second("public_model"), unit="reqps", stack=True),
        P("Requests/s by deployment", "timeseries", _per_second("deployment"), unit="reqps", stack=True),
    ]),
    ("Errors", [
        P("Error rate by error type", "timeseries", f"""SELECT time, error_type, errors / greatest(total, 1) AS rate FROM (
    SELECT {BUCKET} AS time, error_type, sum(requests) AS errors,
        sum(sum(requests)) OVER (PARTITION BY time) AS total
    FROM {REQUESTS_1M}
    WHERE {IN_RANGE_1M}
    GROUP BY time, error_type)
WHERE error_type != ''
ORDER BY time""", unit="percentunit"),
        P("Attempt failure rate by deployment", "timeseries", f"""SELECT $__timeInterval(Timestamp) AS time,
    {DEPLOYMENT} AS deployment, countIf({OUTCOME} != 'ok') / count() AS failure_rate
FROM {SPANS}
WHERE {ATTEMPTS}
GROUP BY time, deployment
ORDER BY time""", unit="percentunit", description="Every upstream attempt (retries and fallbacks too), from "
          "the attempt spans: a request that failed on every deployment has no deployment of its own."),
        P("Top failing deployments", "table", f"""SELECT {DEPLOYMENT} AS deployment,
    SpanAttributes['gen_ai.request.model'] AS upstream_model, count() AS attempts,
    countIf({OUTCOME} != 'ok') AS failed, round(failed / attempts, 4) AS failure_rate,
    arrayStringConcat(topKIf(3)({OUTCOME}, {OUTCOME} != 'ok'), ', ') AS top_outcomes,
    round(quantile(0.95)(Duration) / 1e6) AS p95_ms
FROM {SPANS}
WHERE {ATTEMPTS}
GROUP BY deployment, upstream_model
ORDER BY failed DESC, attempts DESC
LIMIT 20""", width=24, description="From the attempt spans (raw; the time filter prunes by day)."),
        P("Status codes", "piechart", f"""SELECT toString(status_code) AS status, sum(requests) AS n_requests
FROM {REQUESTS_1M}
WHERE {IN_RANGE_1M}
GROUP BY status
ORDER BY n_requests DESC""", width=8),
        P("Attempts per request and fallbacks", "timeseries", f"""SELECT {BUCKET} AS time,
    sum(attempts_total) / greatest(sum(requests), 1) AS attempts_per_request,
    sum(fallbacks) / greatest(sum(requests), 1) AS fallback_share
FROM {REQUESTS_1M}
WHERE {IN_RANGE_1M}
GROUP BY time
ORDER BY time""", width=8),
        P("Limits hit", "timeseries", f"""SELECT {BUCKET} AS time, limited, sum(requests) / {STEP} AS refused_per_s
FROM {REQUESTS_1M}
WHERE {IN_RANGE_1M} AND limited != ''
GROUP BY time, limited
ORDER BY time""", unit="reqps", width=8),
    ]),
    ("Latency", [
        P("Latency p50 / p95 / p99", "timeseries", quantiles("latency_ms_q"), unit="ms", width=8),
        P("Time to first token p50 / p95 / p99", "timeseries", quantiles("ttft_ms_q"), unit="ms", width=8),
        P("Gateway overhead p50 / p95 / p99", "timeseries", quantiles("overhead_ms_q"), unit="ms", width=8),
        P("p95 latency by deployment", "timeseries", f"""SELECT {BUCKET} AS time, deployment,
    quantileTDigestMerge(0.95)(latency_ms_q) AS p95
FROM {REQUESTS_1M}
WHERE {IN_RANGE_1M}
GROUP BY time, deployment
ORDER BY time""", unit="ms"),
        P("Requests by tenant", "barchart", f"""SELECT tenant, sum(requests) AS n_requests,
    sumIf(requests, {SERVER_ERROR}) AS server_errors
FROM {REQUESTS_1M}
WHERE {IN_RANGE_1M}
GROUP BY tenant
ORDER BY n_requests DESC
LIMIT 20"""),
        P("Slowest prompts", "table", f"""SELECT timestamp, tenant, public_model, deployment, round(latency_ms) AS latency,
    round(ttft_ms) AS ttft, status_code, trace_id, substring(prompt_text, 1, 160) AS prompt
FROM {REQUESTS}
WHERE {IN_RANGE}
ORDER BY latency_ms DESC
LIMIT 20""", width=24, description="Raw rows, newest partitions only: the time filter prunes by day."),
    ]),
]


def spec() -> DashboardSpec:
    return DashboardSpec(
        uid="sluice-traffic", title="Sluice / Traffic and latency",
        description="Requests, errors and latency over long ranges by deployment and tenant (ClickHouse).",
        tags=("sluice", "clickhouse"), rows=ROWS, time_from="now-24h")
