"""`sluice report quality`: evaluator scores, users' feedback and how far they agree.

Three plain-text tables over the last `since` (default 1 day):

1. **Evaluator scores** by evaluator, public model, deployment and prompt fingerprint
   (`evaluations`): rows, mean score, share under 0.5, errors (no score), cost.
2. **Feedback** by public model, deployment and prompt fingerprint (`feedback`, joined
   with the user requests of `llm_requests` for the denominators): explicit ratings and
   their positive rate (score >= 0.5) and mean, comments, corrections, reports; implicit
   regenerates per answered chat request and abandons per stream.
3. **Judge vs human agreement** per evaluator (requests that carry both an evaluator score
   and an explicit human score): pairs, agreement of the pass/fail sides (>= 0.5), Cohen's
   kappa, and the Pearson correlation of the scores. "none yet" until ratings arrive.

A table whose source does not exist yet (an older schema) says so instead.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from monitoring.aggregates import naive_utc
from monitoring.feedback_drift import existing_tables
from monitoring.report import _number, render_table
from monitoring.windows import utc


def _fingerprint(value: str) -> str:
    return value or "-"


def _percent(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "-"


def quality_report(client, database: str, *, now: datetime, since: timedelta = timedelta(days=1)) -> str:
    start = naive_utc(now - since)
    params = {"since": start, "now": naive_utc(now)}
    tables = existing_tables(client, database)
    out = [f"quality since {utc(start).isoformat(timespec='seconds')}", ""]
    out += _evaluator_scores(client, database, params, tables) + [""]
    out += _feedback(client, database, params, tables) + [""]
    out += _agreement(client, database, params, tables)
    return "\n".join(out) + "\n"


def _evaluator_scores(client, database: str, params: dict, tables: set[str]) -> list[str]:
    title = "evaluator scores (evaluations):"
    if "evaluations" not in tables:
        return [title, "no evaluations table: run `sluice migrate`"]
    rows = client.query(f"""
SELECT evaluator, toString(public_model), toString(deployment), toString(prompt_fingerprint),
    count() AS n, countIf(score IS NOT NULL) AS scored, avg(score) AS mean, countIf(score < 0.5) AS low,
    countIf(score IS NULL AND label = 'error') AS errors, sum(cost_usd) AS cost
FROM `{database}`.evaluations
WHERE ts >= {{since:DateTime64(3, 'UTC')}} AND ts < {{now:DateTime64(3, 'UTC')}}
GROUP BY evaluator, public_model, deployment, prompt_fingerprint
ORDER BY evaluator, public_model, deployment, n DESC
LIMIT 500""", parameters=params).result_rows
    if not rows:
        return [title, "none (monitoring.evaluators.enabled: true, docs/monitoring.md)"]
    table = [[r[0], r[1], r[2] or "-", _fingerprint(r[3]), str(r[4]), _number(r[6] if r[5] else None),
              _percent(r[7], r[5]), str(r[8]), f"{r[9]:.4f}"] for r in rows]
    return [title, render_table(["evaluator", "model", "deployment", "fingerprint", "rows", "mean score",
                                 "under 0.5", "errors", "cost usd"], table)]


def _feedback(client, database: str, params: dict, tables: set[str]) -> list[str]:
    title = "feedback (explicit ratings; implicit regenerates and abandons):"
    if "feedback" not in tables:
        return [title, "no feedback table: run `sluice migrate`"]
    user = " AND traffic = 'user'" if "traffic" in _request_columns(client, database) else ""
    rows = client.query(f"""
SELECT f.m, f.d, f.fp, f.rated, f.positive, f.mean, f.comments, f.corrections, f.reports, f.regenerates,
    f.abandons, r.answered, r.streams
FROM (
    SELECT toString(public_model) AS m, toString(deployment) AS d, toString(prompt_fingerprint) AS fp,
        countIf(source = 'explicit' AND score IS NOT NULL) AS rated,
        countIf(source = 'explicit' AND score >= 0.5) AS positive,
        avgIf(score, source = 'explicit' AND score IS NOT NULL) AS mean,
        countIf(source = 'explicit' AND comment != '') AS comments,
        countIf(source = 'explicit' AND correction != '') AS corrections,
        countIf(source = 'explicit' AND kind = 'report') AS reports,
        countIf(source = 'implicit' AND kind = 'regenerate') AS regenerates,
        countIf(source = 'implicit' AND kind = 'abandon') AS abandons
    FROM `{database}`.feedback
    WHERE ts >= {{since:DateTime64(3, 'UTC')}} AND ts < {{now:DateTime64(3, 'UTC')}}
    GROUP BY m, d, fp
) AS f
LEFT JOIN (
    SELECT toString(public_model) AS m, toString(deployment) AS d, toString(prompt_fingerprint) AS fp,
        countIf(status_code IN (200, 499)) AS answered, countIf(stream) AS streams
    FROM `{database}`.llm_requests
    WHERE timestamp >= {{since:DateTime64(3, 'UTC')}} AND timestamp < {{now:DateTime64(3, 'UTC')}}
        AND operation = 'chat'{user}
    GROUP BY m, d, fp
) AS r ON f.m = r.m AND f.d = r.d AND f.fp = r.fp
ORDER BY f.m, f.d, f.rated DESC
LIMIT 500""", parameters=params).result_rows
    if not rows:
        return [title, "none (POST /v1/feedback; implicit signals need chat requests that name their user)"]
    table = [[r[0], r[1] or "-", _fingerprint(r[2]), str(r[3]), _percent(r[4], r[3]),
              _number(r[5] if r[3] else None), str(r[6]), str(r[7]), str(r[8]),
              f"{r[9]} ({_percent(r[9], r[11])})", f"{r[10]} ({_percent(r[10], r[12])})"] for r in rows]
    return [title, render_table(["model", "deployment", "fingerprint", "rated", "positive", "mean score",
                                 "comments", "corrections", "reports", "regenerates (of answers)",
                                 "abandons (of streams)"], table)]


def _agreement(client, database: str, params: dict, tables: set[str]) -> list[str]:
    title = "judge vs human agreement (requests with an evaluator score and an explicit rating):"
    if not {"feedback", "evaluations"} <= tables:
        return [title, "needs both the evaluations and the feedback tables"]
    rows = client.query(f"""
SELECT e.evaluator, count() AS pairs,
    countIf((e.machine >= 0.5) = (h.human >= 0.5)) AS agree,
    countIf(e.machine >= 0.5) AS judge_pass, countIf(h.human >= 0.5) AS human_pass,
    corr(e.machine, h.human) AS pearson
FROM (
    SELECT request_id, evaluator, avg(assumeNotNull(score)) AS machine
    FROM `{database}`.evaluations
    WHERE ts >= {{since:DateTime64(3, 'UTC')}} AND score IS NOT NULL
    GROUP BY request_id, evaluator
) AS e
INNER JOIN (
    SELECT request_id, avg(assumeNotNull(score)) AS human
    FROM `{database}`.feedback
    WHERE ts >= {{since:DateTime64(3, 'UTC')}} AND source = 'explicit' AND score IS NOT NULL
    GROUP BY request_id
) AS h ON e.request_id = h.request_id
GROUP BY e.evaluator
ORDER BY pairs DESC""", parameters=params).result_rows
    if not rows:
        return [title, "none yet"]
    table = []
    for evaluator, pairs, agree, judge_pass, human_pass, pearson in rows:
        observed = agree / pairs
        p_judge, p_human = judge_pass / pairs, human_pass / pairs
        expected = p_judge * p_human + (1 - p_judge) * (1 - p_human)
        kappa = (observed - expected) / (1 - expected) if expected < 1 else None
        table.append([evaluator, str(pairs), _percent(agree, pairs), _number(kappa), _number(pearson)])
    return [title, render_table(["evaluator", "pairs", "agreement", "kappa", "pearson"], table)]


def _request_columns(client, database: str) -> set[str]:
    rows = client.query("SELECT name FROM system.columns WHERE database = {db:String} AND table = 'llm_requests'",
                        parameters={"db": database}).result_rows
    return {row[0] for row in rows}
