"""Cost and usage (ClickHouse): tokens and cost by tenant, key and model, cost per
request, and how fast budgets burn."""

from __future__ import annotations

from dashboards.board import DashboardSpec
from dashboards.panels import ClickHousePanel as P
from dashboards.sql import BUCKET, IN_RANGE_1M, REQUESTS_1M

ROWS = [
    ("Spend", [
        P("Cost", "stat", f"SELECT sum(cost_usd_total) AS cost FROM {REQUESTS_1M} WHERE {IN_RANGE_1M}",
          unit="currencyUSD", width=6, height=4),
        P("Tokens", "stat", f"""SELECT sum(input_tokens_total) AS input, sum(output_tokens_total) AS output
FROM {REQUESTS_1M} WHERE {IN_RANGE_1M}""", unit="short", width=6, height=4),
        P("Cost per request", "stat", f"""SELECT sum(cost_usd_total) / greatest(sum(priced), 1) AS cost_per_request
FROM {REQUESTS_1M} WHERE {IN_RANGE_1M}""", unit="currencyUSD", width=6, height=4),
        P("Projected 30-day spend", "stat", f"""SELECT sum(cost_usd_total) * 2592000
    / greatest(dateDiff('second', $__fromTime, $__toTime), 1) AS projected_30d
FROM {REQUESTS_1M} WHERE {IN_RANGE_1M}""", unit="currencyUSD", width=6, height=4,
          description="The range's spend scaled to 30 days."),
        P("Cost by public model", "timeseries", f"""SELECT {BUCKET} AS time, public_model, sum(cost_usd_total) AS cost
FROM {REQUESTS_1M}
WHERE {IN_RANGE_1M}
GROUP BY time, public_model
ORDER BY time""", unit="currencyUSD", stack=True),
        P("Tokens in and out", "timeseries", f"""SELECT {BUCKET} AS time, sum(input_tokens_total) AS input,
    sum(output_tokens_total) AS output, sum(cached_tokens_total) AS cached
FROM {REQUESTS_1M}
WHERE {IN_RANGE_1M}
GROUP BY time
ORDER BY time""", unit="short"),
    ]),
    ("Who spends", [
        P("Cost by tenant", "barchart", f"""SELECT tenant, sum(cost_usd_total) AS cost
FROM {REQUESTS_1M}
WHERE {IN_RANGE_1M}
GROUP BY tenant
ORDER BY cost DESC
LIMIT 20""", unit="currencyUSD", width=8),
        P("Cost per request by model", "barchart", f"""SELECT public_model,
    sum(cost_usd_total) / greatest(sum(priced), 1) AS cost_per_request
FROM {REQUESTS_1M}
WHERE {IN_RANGE_1M}
GROUP BY public_model
ORDER BY cost_per_request DESC
LIMIT 20""", unit="currencyUSD", width=8),
        P("Budget burn (cumulative cost by tenant)", "timeseries", f"""SELECT time, tenant,
    sum(cost) OVER (PARTITION BY tenant ORDER BY time) AS cumulative_cost
FROM (
    SELECT {BUCKET} AS time, tenant, sum(cost_usd_total) AS cost
    FROM {REQUESTS_1M}
    WHERE {IN_RANGE_1M}
    GROUP BY time, tenant)
ORDER BY time""", unit="currencyUSD", width=8,
          description="Compare with the tenant's budget (sluice_budget_usd in Prometheus)."),
        P("Usage by key", "table", f"""SELECT key_id, tenant, sum(requests) AS n_requests,
    sum(input_tokens_total) AS input_tokens, sum(output_tokens_total) AS output_tokens,
    round(sum(cost_usd_total), 6) AS cost_usd
FROM {REQUESTS_1M}
WHERE {IN_RANGE_1M}
GROUP BY key_id, tenant
ORDER BY cost_usd DESC, n_requests DESC
LIMIT 50""", width=12),
        P("Usage by model and deployment", "table", f"""SELECT public_model, deployment, provider,
    sum(requests) AS n_requests, sum(requests) - sum(priced) AS unpriced,
    sum(input_tokens_total) AS input_tokens, sum(output_tokens_total) AS output_tokens,
    round(sum(cost_usd_total), 6) AS cost_usd
FROM {REQUESTS_1M}
WHERE {IN_RANGE_1M}
GROUP BY public_model, deployment, provider
ORDER BY cost_usd DESC, n_requests DESC
LIMIT 50""", width=12),
    ]),
]


def spec() -> DashboardSpec:
    return DashboardSpec(
        uid="sluice-cost", title="Sluice / Cost and usage",
        description="Tokens and cost by tenant, key and model; cost per request; budget burn (ClickHouse).",
        tags=("sluice", "clickhouse", "cost"), rows=ROWS, time_from="now-7d")
