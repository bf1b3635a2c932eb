"""Grafana-managed alert rules on ClickHouse (drift, upstream model change, answer quality,
evaluator score drop, cost spike), written as Grafana's alerting provisioning file by `dashboards/build.py`.

Each rule is one SQL query in table format: its string columns become the alert's labels
(one alert instance per row), its one number is reduced (last) and compared with the
threshold. The SQL names tables as `${database}.x`; the provisioned file has the database
of the provisioned datasource ("sluice"), the tests their own. `$__timeFilter` spans the
rule's `range_s`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

RUNBOOK = "https://github.com/sluice-gateway/sluice/blob/main/docs/runbook.md"
DATASOURCE_UID = "sluice-clickhouse"
FOLDER = "Sluice"


@dataclass(frozen=True, slots=True)
class ClickHouseAlert:
    uid: str
    title: str
    sql: str
    above: float                 # fires when the value is above this
    range_s: int
    severity: str
    summary: str
    anchor: str                  # docs/runbook.md heading anchor
    pending: str = "0s"


ALERTS: tuple[ClickHouseAlert, ...] = (
    ClickHouseAlert(
        uid="sluice-drift-alerting", title="SluiceDriftAlerting",
        sql="""SELECT metric, public_model, deployment, toFloat64(max(alerting)) AS alerting FROM (
    SELECT metric, public_model, deployment, tenant, prompt_fingerprint, argMax(alerting, ts) AS alerting
    FROM ${database}.drift_metrics
    WHERE $__timeFilter(ts)
    GROUP BY metric, public_model, deployment, tenant, prompt_fingerprint)
GROUP BY metric, public_model, deployment""",
        above=0, range_s=1800, severity="warning", anchor="drift-alerting",
        summary="Drift metric {{ $labels.metric }} is alerting on {{ $labels.public_model }} / "
                "{{ $labels.deployment }} (crossed its threshold in consecutive monitor runs)"),
    ClickHouseAlert(
        uid="sluice-upstream-model-change", title="SluiceUpstreamModelChanged",
        sql="""SELECT public_model, deployment, kind, toFloat64(count()) AS changes
FROM ${database}.model_events
WHERE $__timeFilter(ts) AND alerting = 1 AND old_value != ''
GROUP BY public_model, deployment, kind""",
        above=0, range_s=3600, severity="warning", anchor="upstream-model-changed",
        summary="{{ $labels.deployment }} answers {{ $labels.public_model }} with a new {{ $labels.kind }}"),
    ClickHouseAlert(
        uid="sluice-quality-drop", title="SluiceAnswerQualityDropped",
        sql="""SELECT public_model, deployment, metric,
    max(if(metric = 'json_valid_rate', baseline - value, value - baseline)) AS worse_by
FROM ${database}.drift_metrics
WHERE $__timeFilter(ts) AND metric IN ('json_valid_rate', 'refusal_rate', 'empty_answer_rate')
    AND value IS NOT NULL AND baseline IS NOT NULL AND n_current >= 100
GROUP BY public_model, deployment, metric""",
        above=0.10, range_s=1800, severity="warning", anchor="answer-quality-dropped", pending="10m",
        summary="{{ $labels.metric }} on {{ $labels.public_model }} / {{ $labels.deployment }} is more than "
                "10 points worse than its baseline"),
    ClickHouseAlert(
        uid="sluice-evaluator-score-drop", title="SluiceEvaluatorScoreDropped",
        sql="""SELECT evaluator, public_model, if(isFinite(before), greatest(before - recent, 0), 0) AS dropped_by FROM (
    SELECT evaluator, public_model,
        avgIf(score, ts >= $__toTime - INTERVAL 1 HOUR) AS recent,
        avgIf(score, ts < $__toTime - INTERVAL 1 HOUR) AS before,
        countIf(ts >= $__toTime - INTERVAL 1 HOUR) AS n_recent
    FROM ${database}.evaluations
    WHERE $__timeFilter(ts) AND score IS NOT NULL
    GROUP BY evaluator, public_model)
WHERE n_recent >= 20""",
        above=0.15, range_s=86400, severity="warning", anchor="evaluator-score-dropped", pending="10m",
        summary="{{ $labels.evaluator }} scores of {{ $labels.public_model }} fell by more than 0.15 in the last "
                "hour against the day before"),
    ClickHouseAlert(
        uid="sluice-cost-spike", title="SluiceCostSpike",
        sql="""SELECT tenant, if(last_hour < 1, 0, last_hour / greatest(hourly_before, 0.01)) AS ratio FROM (
    SELECT tenant,
        sumIf(cost_usd_total, minute >= $__toTime - INTERVAL 1 HOUR) AS last_hour,
        sumIf(cost_usd_total, minute < $__toTime - INTERVAL 1 HOUR)
            / greatest(dateDiff('hour', $__fromTime, $__toTime) - 1, 1) AS hourly_before
    FROM ${database}.llm_requests_1m
    WHERE $__timeFilter(minute)
    GROUP BY tenant)""",
        above=3, range_s=86400, severity="warning", anchor="cost-spike",
        summary="Tenant {{ $labels.tenant }} spent over 3x its hourly average of the last day in the last hour "
                "(at least $1)"),
)


def _rule(alert: ClickHouseAlert, database: str) -> dict[str, Any]:
    sql = alert.sql.replace("${database}", database)
    return {
        "uid": alert.uid,
        "title": alert.title,
        "condition": "C",
        "data": [
            {"refId": "A", "relativeTimeRange": {"from": alert.range_s, "to": 0},
             "datasourceUid": DATASOURCE_UID,
             "model": {"refId": "A", "editorType": "sql", "format": 1, "queryType": "table", "rawSql": sql}},
            {"refId": "B", "datasourceUid": "__expr__",
             "model": {"refId": "B", "type": "reduce", "expression": "A", "reducer": "last"}},
            {"refId": "C", "datasourceUid": "__expr__",
             "model": {"refId": "C", "type": "threshold", "expression": "B",
                       "conditions": [{"evaluator": {"type": "gt", "params": [alert.above]}}]}},
        ],
        "noDataState": "OK",
        "execErrState": "Error",
        "for": alert.pending,
        "labels": {"severity": alert.severity, "service": "sluice"},
        "annotations": {"summary": alert.summary, "runbook_url": f"{RUNBOOK}#{alert.anchor}"},
    }


def provisioning(database: str = "sluice") -> dict[str, Any]:
    """Grafana's alerting provisioning document (apiVersion 1)."""
    return {"apiVersion": 1, "groups": [{
        "orgId": 1, "name": "sluice-clickhouse", "folder": FOLDER, "interval": "5m",
        "rules": [_rule(a, database) for a in ALERTS]}]}
