"""Cache (ClickHouse): exact and semantic hit rates, the similarity of semantic hits, and
the tokens and cost the cache saved."""

from __future__ import annotations

from dashboards.board import DashboardSpec
from dashboards.panels import ClickHousePanel as P
from dashboards.sql import BUCKET, IN_RANGE, IN_RANGE_1M, REQUESTS, REQUESTS_1M

HITS = "cache_status IN ('hit', 'semantic-hit')"
LOOKUPS = "cache_status IN ('hit', 'semantic-hit', 'miss')"
# A hit's tokens are the stored answer's usage; what it would have cost is the model's
# mean price per token over the range, from the requests that did reach a provider.
_SAVED = f"""SELECT public_model,
    sumIf(input_tokens_total + output_tokens_total, {HITS}) AS tokens_saved,
    sumIf(cost_usd_total, NOT ({HITS})) / greatest(sumIf(input_tokens_total + output_tokens_total, NOT ({HITS})), 1)
        * tokens_saved AS cost_saved
FROM {REQUESTS_1M}
WHERE {IN_RANGE_1M}
GROUP BY public_model"""

ROWS = [
    ("Hit rate", [
        P("Hit rate", "stat", f"""SELECT sumIf(requests, {HITS}) / greatest(sumIf(requests, {LOOKUPS}), 1) AS hit_rate
FROM {REQUESTS_1M} WHERE {IN_RANGE_1M}""", unit="percentunit", width=6, height=4),
        P("Tokens saved", "stat", f"SELECT sum(tokens_saved) AS tokens_saved FROM ({_SAVED})",
          unit="short", width=6, height=4),
        P("Cost saved", "stat", f"SELECT sum(cost_saved) AS cost_saved FROM ({_SAVED})",
          unit="currencyUSD", width=6, height=4),
        P("Semantic hits", "stat", f"""SELECT sumIf(requests, cache_status = 'semantic-hit') AS semantic_hits
FROM {REQUESTS_1M} WHERE {IN_RANGE_1M}""", unit="short", width=6, height=4),
        P("Hit rate: exact and semantic", "timeseries", f"""SELECT {BUCKET} AS time,
    sumIf(requests, cache_status = 'hit') / greatest(sumIf(requests, {LOOKUPS}), 1) AS exact,
    sumIf(requests, cache_status = 'semantic-hit') / greatest(sumIf(requests, {LOOKUPS}), 1) AS semantic
FROM {REQUESTS_1M}
WHERE {IN_RANGE_1M}
GROUP BY time
ORDER BY time""", unit="percentunit", stack=True),
        P("Cache outcomes", "piechart", f"""SELECT if(cache_status = '', 'none', cache_status) AS outcome,
    sum(requests) AS n_requests
FROM {REQUESTS_1M}
WHERE {IN_RANGE_1M}
GROUP BY outcome
ORDER BY n_requests DESC"""),
    ]),
    ("Savings and similarity", [
        P("Semantic hit similarity", "barchart", f"""SELECT toString(floor(cache_similarity, 2)) AS similarity, count() AS hits
FROM {REQUESTS}
WHERE {IN_RANGE} AND cache_status = 'semantic-hit' AND cache_similarity IS NOT NULL
GROUP BY similarity
ORDER BY similarity""", width=8,
          description="Raw rows of semantic hits only, bucketed to 0.01."),
        P("Saved by model", "table", f"""SELECT public_model, tokens_saved, round(cost_saved, 6) AS cost_saved
FROM ({_SAVED})
ORDER BY cost_saved DESC""", width=8),
        P("Hit rate by model", "barchart", f"""SELECT public_model,
    sumIf(requests, {HITS}) / greatest(sumIf(requests, {LOOKUPS}), 1) AS hit_rate
FROM {REQUESTS_1M}
WHERE {IN_RANGE_1M}
GROUP BY public_model
ORDER BY hit_rate DESC
LIMIT 20""", unit="percentunit", width=8),
    ]),
]


def spec() -> DashboardSpec:
    return DashboardSpec(
        uid="sluice-cache", title="Sluice / Cache",
        description="Exact and semantic hit rates, similarity of semantic hits, tokens and cost saved (ClickHouse).",
        tags=("sluice", "clickhouse", "cache"), rows=ROWS)
