"""Quality and drift (ClickHouse): the drift monitor's metrics against their thresholds,
what is alerting now, and upstream model / fingerprint changes (`model_events`, also the
dashboard's annotations), and the hallucination evaluators' scores by model and prompt
fingerprint (`evaluations`), and what users said (`feedback`: ratings, regenerations,
abandoned streams)."""

from __future__ import annotations

from dashboards.board import Annotation, DashboardSpec, Variable, segment_filter
from dashboards.panels import ClickHousePanel as P
from dashboards.sql import DRIFT, EVALUATIONS, EVENTS, FEEDBACK, IN_RANGE_1M, REQUESTS_1M, SEGMENTS

EVALUATED = f"$__timeFilter(ts) AND {SEGMENTS}"
# Labels of an answer an evaluator found wanting (monitoring/evaluators: grounding, consistency,
# judge, assertions); `error` is an evaluation that could not score.
BAD_LABELS = "('unsupported', 'inconsistent', 'fail', 'loss')"

METRIC_FILTER = "$__conditionalAll(metric IN (${metric:singlequote}), $metric)"


def value_vs_threshold(metric_filter: str) -> str:
    """Each metric's value and its threshold as two series per metric (max over segments)."""
    where = f"$__timeFilter(ts) AND {SEGMENTS} AND {metric_filter}"
    return f"""SELECT * FROM (
    SELECT $__timeInterval(ts) AS time, concat(metric, ' value') AS series, max(value) AS v
    FROM {DRIFT}
    WHERE {where}
    GROUP BY time, series
    UNION ALL
    SELECT $__timeInterval(ts) AS time, concat(metric, ' threshold') AS series, max(threshold) AS v
    FROM {DRIFT}
    WHERE {where}
    GROUP BY time, series)
ORDER BY time"""


def _metrics(*names: str) -> str:
    return "metric IN (" + ", ".join(f"'{n}'" for n in names) + ")"


ROWS = [
    ("Drift", [
        P("Segments alerting", "stat", f"""SELECT countIf(alerting = 1) AS alerting_segments FROM (
    SELECT metric, public_model, deployment, tenant, prompt_fingerprint, argMax(alerting, ts) AS alerting
    FROM {DRIFT}
    WHERE $__timeFilter(ts) AND {SEGMENTS}
    GROUP BY metric, public_model, deployment, tenant, prompt_fingerprint)""", width=6, height=4),
        P("Model events", "stat", f"""SELECT count() AS model_events FROM {EVENTS}
WHERE $__timeFilter(first_seen) AND {SEGMENTS}""", width=6, height=4),
        P("Monitor runs", "stat", f"SELECT uniqExact(ts) AS runs FROM {DRIFT} WHERE $__timeFilter(ts)",
          width=6, height=4),
        P("Metrics without enough samples", "stat", f"""SELECT countIf(value IS NULL) AS unmeasured
FROM {DRIFT} WHERE $__timeFilter(ts) AND {SEGMENTS}""", width=6, height=4,
          description="Rows whose value could not be computed (below monitoring.min_samples): the note says why."),
        P("Drift value against threshold ($metric)", "timeseries", value_vs_threshold(METRIC_FILTER), width=24),
        P("Prompt embedding drift (classifier AUC, MMD)", "timeseries",
          value_vs_threshold(_metrics("prompt_embedding_auc", "prompt_embedding_mmd"))),
        P("Prompt and completion length (PSI)", "timeseries",
          value_vs_threshold(_metrics("prompt_tokens_psi", "completion_tokens_psi"))),
        P("Refusals, empty answers, JSON validity", "timeseries",
          value_vs_threshold(_metrics("refusal_rate", "empty_answer_rate", "json_valid_rate")), unit="percentunit"),
        P("Latency and TTFT drift", "timeseries",
          value_vs_threshold(_metrics("latency_p50_ms", "latency_p95_ms", "ttft_p50_ms")), unit="ms"),
        P("Finish reasons and language mix (Jensen-Shannon)", "timeseries",
          value_vs_threshold(_metrics("finish_reason_js", "language_js"))),
        P("Error, cache and guardrail rates", "timeseries",
          value_vs_threshold(_metrics("error_rate", "cache_hit_rate", "guardrail_block_rate")), unit="percentunit"),
    ]),
    ("Evaluators", [
        P("Evaluator scores by model", "timeseries", f"""SELECT $__timeInterval(ts) AS time,
    concat(evaluator, ' ', public_model) AS series, avg(score) AS mean_score
FROM {EVALUATIONS}
WHERE {EVALUATED} AND score IS NOT NULL
GROUP BY time, series
ORDER BY time""", unit="percentunit", description="Higher is better; a changed evaluator config "
          "(evaluator_id) is a new series in the table below, not a jump."),
        P("Evaluation labels", "barchart", f"""SELECT concat(evaluator, ' ', label) AS evaluator_label, count() AS evaluations
FROM {EVALUATIONS}
WHERE {EVALUATED}
GROUP BY evaluator_label
ORDER BY evaluations DESC
LIMIT 30"""),
        P("Scores by prompt fingerprint", "table", f"""SELECT evaluator, evaluator_id, public_model, prompt_fingerprint,
    count() AS evaluations, round(avg(score), 4) AS mean_score,
    round(countIf(label IN {BAD_LABELS}) / count(), 4) AS bad_share,
    countIf(score IS NULL) AS unscored, round(sum(cost_usd), 6) AS cost_usd
FROM {EVALUATIONS}
WHERE {EVALUATED}
GROUP BY evaluator, evaluator_id, public_model, prompt_fingerprint
ORDER BY mean_score ASC
LIMIT 100""", width=18),
        P("Cost of evaluations", "stat", f"SELECT sum(cost_usd) AS evaluation_cost FROM {EVALUATIONS} "
          f"WHERE {EVALUATED}", unit="currencyUSD", width=6),
    ]),
    ("Feedback", [
        P("Feedback rate", "stat", f"""SELECT
    (SELECT count() FROM {FEEDBACK} WHERE {EVALUATED} AND source = 'explicit')
        / greatest((SELECT sum(requests) FROM {REQUESTS_1M} WHERE {IN_RANGE_1M}), 1) AS explicit_per_request,
    (SELECT avg(score) FROM {FEEDBACK} WHERE {EVALUATED} AND source = 'explicit' AND score IS NOT NULL)
        AS mean_rating""", width=8, height=6,
          description="Explicit feedback (POST /v1/feedback) per request served, and its mean rating (0-1)."),
        P("Feedback by kind", "timeseries", f"""SELECT $__timeInterval(ts) AS time, concat(source, ' ', kind) AS signal,
    count() AS signals
FROM {FEEDBACK}
WHERE {EVALUATED}
GROUP BY time, signal
ORDER BY time""", width=16, height=6),
        P("Ratings and implicit signals by model", "table", f"""SELECT public_model, prompt_fingerprint,
    countIf(source = 'explicit') AS explicit, round(avgIf(score, source = 'explicit' AND score IS NOT NULL), 4)
        AS mean_rating,
    countIf(kind = 'regenerate') AS regenerations, countIf(kind = 'abandon') AS abandoned_streams,
    countIf(kind = 'report') AS reports
FROM {FEEDBACK}
WHERE {EVALUATED}
GROUP BY public_model, prompt_fingerprint
ORDER BY mean_rating ASC
LIMIT 100""", width=24),
    ]),
    ("What changed", [
        P("Alerting over time", "timeseries", f"""SELECT $__timeInterval(ts) AS time, metric, sum(alerting) AS alerting_segments
FROM {DRIFT}
WHERE $__timeFilter(ts) AND {SEGMENTS} AND {METRIC_FILTER}
GROUP BY time, metric
ORDER BY time""", width=12),
        P("Model events by kind", "barchart", f"""SELECT kind, count() AS events
FROM {EVENTS}
WHERE $__timeFilter(first_seen) AND {SEGMENTS}
GROUP BY kind
ORDER BY events DESC""", width=12),
        P("Latest value per segment", "table", f"""SELECT metric, public_model, deployment, tenant,
    argMax(value, ts) AS latest_value, argMax(threshold, ts) AS latest_threshold,
    argMax(alerting, ts) AS is_alerting, argMax(n_current, ts) AS samples, argMax(note, ts) AS latest_note,
    max(ts) AS last_run
FROM {DRIFT}
WHERE $__timeFilter(ts) AND {SEGMENTS} AND {METRIC_FILTER}
GROUP BY metric, public_model, deployment, tenant
ORDER BY is_alerting DESC, metric
LIMIT 200""", width=24),
        P("Upstream model and fingerprint changes", "table", f"""SELECT first_seen, public_model, deployment, tenant, kind,
    old_value, new_value, requests_since, alerting
FROM {EVENTS}
WHERE $__timeFilter(first_seen) AND {SEGMENTS}
ORDER BY first_seen DESC
LIMIT 100""", width=24),
    ]),
]


def spec() -> DashboardSpec:
    return DashboardSpec(
        uid="sluice-quality", title="Sluice / Quality and drift",
        description="Drift metrics against thresholds; upstream model changes as annotations (ClickHouse).",
        tags=("sluice", "clickhouse", "drift"), rows=ROWS, time_from="now-7d",
        variables=[Variable("metric", "drift metric",
                            f"SELECT DISTINCT metric FROM {DRIFT} WHERE $__timeFilter(ts) ORDER BY metric")],
        annotations=[Annotation("Model events", f"""SELECT first_seen AS time,
    concat(kind, ': ', if(old_value = '', '(first seen)', old_value), ' -> ', new_value,
           ' on ', public_model, ' / ', deployment) AS text,
    [kind, public_model, deployment] AS tags
FROM {EVENTS}
WHERE $__timeFilter(first_seen) AND {segment_filter()}
ORDER BY time""")])
