"""Alerts need persistence: a metric alerts only when its threshold was crossed in
`alert_after_runs` consecutive runs, this one included.

The runner is stateless: the previous runs are the `drift_metrics` rows already written
for the same segment and metric (their `crossed` column), read back with
`LIMIT k BY segment, metric` over a bounded look-back. A run in which the metric could not
be measured or was gated (too few samples) did not cross, so it breaks the streak.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from monitoring.aggregates import naive_utc
from monitoring.segments import Segment
from telemetry.drift_tables import DRIFT_METRICS

StreakKey = tuple[Segment, str]


def previous_crossings(client, database: str, *, runs: int, now: datetime, lookback_s: float,
                       segments: list[Segment]) -> dict[StreakKey, list[bool]]:
    """(segment, metric) -> `crossed` of its last `runs` runs before `now`, newest first."""
    if runs <= 0 or not segments:
        return {}
    sql = f"""
SELECT public_model, deployment, tenant, prompt_fingerprint, metric, groupArray((ts, crossed)) AS runs
FROM (
    SELECT public_model, deployment, tenant, prompt_fingerprint, metric, ts, crossed
    FROM `{database}`.{DRIFT_METRICS}
    WHERE ts < {{now:DateTime64(3, 'UTC')}} AND ts >= {{since:DateTime64(3, 'UTC')}}
        AND tuple(toString(public_model), toString(deployment), toString(tenant), toString(prompt_fingerprint))
            IN {{segments:Array(Tuple(String, String, String, String))}}
    ORDER BY ts DESC
    LIMIT {{runs:UInt32}} BY public_model, deployment, tenant, prompt_fingerprint, metric
)
GROUP BY public_model, deployment, tenant, prompt_fingerprint, metric"""
    rows = client.query(sql, parameters={
        "now": naive_utc(now), "since": naive_utc(now - timedelta(seconds=lookback_s)), "runs": runs,
        "segments": [tuple(s) for s in segments]}).result_rows
    # groupArray keeps no order: sort the (ts, crossed) pairs here, newest first
    return {(Segment(*row[:4]), row[4]): [bool(c) for _, c in sorted(row[5], reverse=True)] for row in rows}


def is_alerting(crossed_now: bool, previous: list[bool], alert_after_runs: int) -> bool:
    """Crossed now and in the `alert_after_runs - 1` runs before, without a gap."""
    if not crossed_now:
        return False
    needed = alert_after_runs - 1
    return len(previous) >= needed and all(previous[:needed])
