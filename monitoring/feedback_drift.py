"""Quality scores as drift metrics: a drop in users' thumbs-up rate or in an evaluator's mean
score is judged like any other metric of a segment (same thresholds, noise gate,
`alert_after_runs`; monitoring/judge.py).

    feedback_positive_rate       explicit ratings with score >= 0.5, over explicit ratings
                                 (`feedback`, source = 'explicit', score not NULL)
    eval_<evaluator>_score       mean `evaluations.score` of grounding, self_consistency,
                                 judge; eval_assertions_score pools every assertion

Both tables carry the segment's four columns, so the same segment expressions apply
(`monitoring.segment_by`). A segment gets these rows only when it has feedback or
evaluations in its window or baseline (most segments have neither: rows that only say
"nothing to measure" would drown the ones that do). The z of a mean is Welch's
(difference over its standard error), of a rate the two-proportion z.
"""

from __future__ import annotations

import math

from monitoring import statistics
from monitoring.aggregates import window_parameters
from monitoring.verdicts import Measurement
from monitoring.segments import SEGMENT_PARAM_TYPE, Segment, SegmentColumns
from monitoring.windows import Range

FEEDBACK_METRIC = "feedback_positive_rate"
# evaluations.evaluator -> its drift metric (assertions are named `assertion:<name>`: pooled)
EVALUATOR_METRICS = {"grounding": "eval_grounding_score", "self_consistency": "eval_self_consistency_score",
                     "judge": "eval_judge_score", "assertion": "eval_assertions_score"}
QUALITY_METRICS = (FEEDBACK_METRIC, *EVALUATOR_METRICS.values())


def _sides(column: str) -> str:
    return ("arrayJoin(arrayConcat("
            f"if({column} >= {{bs:DateTime64(3, 'UTC')}} AND {column} < {{be:DateTime64(3, 'UTC')}}, [0], []), "
            f"if({column} >= {{cs:DateTime64(3, 'UTC')}} AND {column} < {{ce:DateTime64(3, 'UTC')}}, [1], [])))")


def _in_windows(column: str) -> str:
    return (f"(({column} >= {{bs:DateTime64(3, 'UTC')}} AND {column} < {{be:DateTime64(3, 'UTC')}}) "
            f"OR ({column} >= {{cs:DateTime64(3, 'UTC')}} AND {column} < {{ce:DateTime64(3, 'UTC')}}))")


def existing_tables(client, database: str) -> set[str]:
    rows = client.query("SELECT name FROM system.tables WHERE database = {db:String} "
                        "AND name IN ('feedback', 'evaluations')", parameters={"db": database}).result_rows
    return {row[0] for row in rows}


def quality_measures(client, database: str, columns: SegmentColumns, *, current: Range, baseline: Range,
                     segments: list[Segment], tables: set[str]) -> dict[Segment, list[Measurement]]:
    """The quality metrics of `segments` with data, current window against `baseline`."""
    if not segments:
        return {}
    parameters = window_parameters(current, baseline, [])
    parameters["segments"] = [tuple(s) for s in segments]
    in_segments = f"{columns.key_tuple()} IN {{segments:{SEGMENT_PARAM_TYPE}}}"
    out: dict[Segment, list[Measurement]] = {}
    if "feedback" in tables:
        sql = f"""
SELECT {columns.select()}, {_sides('ts')} AS side, count() AS n, countIf(score >= 0.5) AS positive
FROM `{database}`.feedback
WHERE {_in_windows('ts')} AND source = 'explicit' AND score IS NOT NULL AND {in_segments}
GROUP BY {columns.group()}, side"""
        counts: dict[Segment, dict[int, tuple[int, int]]] = {}
        for row in client.query(sql, parameters=parameters).named_results():
            counts.setdefault(_segment(row), {})[int(row["side"])] = (int(row["n"]), int(row["positive"]))
        for segment, sides in counts.items():
            (n_cur, pos_cur), (n_base, pos_base) = sides.get(1, (0, 0)), sides.get(0, (0, 0))
            change = statistics.rate_change(pos_cur, n_cur, pos_base, n_base)
            out.setdefault(segment, []).append(Measurement(
                FEEDBACK_METRIC, _finite(change.current), _finite(change.baseline), n_cur, n_base,
                "" if n_cur else "no explicit ratings in the window", z=change.z))
    if "evaluations" in tables:
        sql = f"""
SELECT {columns.select()}, {_sides('ts')} AS side,
    if(startsWith(evaluator, 'assertion:'), 'assertion', toString(evaluator)) AS family,
    count() AS n, avg(score) AS mean, varSamp(score) AS variance
FROM `{database}`.evaluations
WHERE {_in_windows('ts')} AND score IS NOT NULL AND {in_segments}
    AND (evaluator IN ('grounding', 'self_consistency', 'judge') OR startsWith(evaluator, 'assertion:'))
GROUP BY {columns.group()}, side, family"""
        means: dict[tuple[Segment, str], dict[int, tuple[int, float, float]]] = {}
        for row in client.query(sql, parameters=parameters).named_results():
            key = (_segment(row), row["family"])
            means.setdefault(key, {})[int(row["side"])] = (int(row["n"]), float(row["mean"]), float(row["variance"]))
        for (segment, family), sides in sorted(means.items()):
            out.setdefault(segment, []).append(_mean_change(EVALUATOR_METRICS[family], sides.get(1), sides.get(0)))
    return out


def _mean_change(metric: str, cur: tuple[int, float, float] | None,
                 base: tuple[int, float, float] | None) -> Measurement:
    n_cur, mean_cur, var_cur = cur or (0, math.nan, math.nan)
    n_base, mean_base, var_base = base or (0, math.nan, math.nan)
    z = None
    if n_cur >= 2 and n_base >= 2:
        spread = math.sqrt(max(var_cur, 0.0) / n_cur + max(var_base, 0.0) / n_base)
        z = (mean_cur - mean_base) / spread if spread > 0 else (0.0 if mean_cur == mean_base else math.copysign(
            math.inf, mean_cur - mean_base))
    note = "" if n_cur else "no evaluations in the window"
    return Measurement(metric, _finite(mean_cur), _finite(mean_base), n_cur, n_base, note, z=z)


def _segment(row: dict) -> Segment:
    return Segment(row["seg_public_model"], row["seg_deployment"], row["seg_tenant"], row["seg_prompt_fingerprint"])


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
