"""Which requests an evaluator looks at in a run, and how many it may still write.

All in ClickHouse: the sample is drawn from a hash of the request id (`cityHash64`: a
request is in or out of an evaluator's sample once and for all, whichever run or replica
asks), at the rate of its model, else its tenant, else the default; requests the evaluator
already scored (same `evaluator_id`) are left out (`GLOBAL NOT IN`: on a cluster both
tables are Distributed, and a plain IN would be refused); only user traffic (`traffic = 'user'`),
answered without error and not from the cache (a cache hit replays an answer already
eligible when it was fresh), between `lookback_s` and `settle_s` ago.

Caps, read back from `evaluations` so they hold across runs and restarts:
- `max_per_minute`: rows the evaluator wrote in the last 60 s count against it, so a run
  writes at most `max_per_minute` minus those;
- `daily_budget_usd` (evaluators that call a model): what it spent since 00:00 UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from monitoring.evaluators.config import SampleConfig
from telemetry.evaluations import EVALUATIONS

_SCALE = 1_000_000
CANDIDATE_COLUMNS = ("request_id", "trace_id", "span_id", "timestamp", "public_model", "deployment", "tenant",
                     "prompt_fingerprint", "prompt_text", "completion_text")


@dataclass(frozen=True, slots=True)
class Candidate:
    request_id: str
    trace_id: str
    span_id: str
    timestamp: datetime
    public_model: str
    deployment: str
    tenant: str
    prompt_fingerprint: str
    prompt_text: str
    completion_text: str
    extras: tuple = ()            # the caller's extra_columns, in order


def _naive(value: datetime) -> datetime:
    """Naive UTC (how the driver sends DateTime64 parameters)."""
    return value if value.tzinfo is None else value.astimezone(timezone.utc).replace(tzinfo=None)


def rate_expression(sample: SampleConfig, parameters: dict) -> str:
    """SQL: the sampling rate of a row (a model's, else its tenant's, else the default)."""
    parameters.update(mk=list(sample.models), mv=[float(v) for v in sample.models.values()],
                      tk=list(sample.tenants), tv=[float(v) for v in sample.tenants.values()], rate=float(sample.rate))
    return ("if(has({mk:Array(String)}, public_model), {mv:Array(Float64)}[indexOf({mk:Array(String)}, public_model)], "
            "if(has({tk:Array(String)}, tenant), {tv:Array(Float64)}[indexOf({tk:Array(String)}, tenant)], "
            "{rate:Float64}))")


def pending(client, database: str, *, evaluator_id: str, sample: SampleConfig, now: datetime, lookback_s: float,
            settle_s: float, limit: int, extra_where: str = "", extra_parameters: dict | None = None,
            extra_columns: tuple[str, ...] = ()) -> list[Candidate]:
    """Up to `limit` sampled requests this evaluator has not scored yet, oldest first."""
    if limit <= 0:
        return []
    parameters: dict = {"since": _naive(now) - timedelta(seconds=lookback_s),
                        "until": _naive(now) - timedelta(seconds=settle_s), "eid": evaluator_id, "limit": limit,
                        **(extra_parameters or {})}
    rate = rate_expression(sample, parameters)
    sql = f"""
SELECT {', '.join(CANDIDATE_COLUMNS + tuple(extra_columns))}
FROM `{database}`.llm_requests
WHERE timestamp >= {{since:DateTime64(3, 'UTC')}} AND timestamp < {{until:DateTime64(3, 'UTC')}}
  AND traffic = 'user' AND status_code < 400 AND error_type = '' AND operation IN ('chat', 'responses')
  AND cache_status NOT IN ('hit', 'semantic-hit') AND completion_text != ''
  AND cityHash64(request_id) % {_SCALE} < toUInt64(round({rate} * {_SCALE}))
  AND request_id GLOBAL NOT IN (
      SELECT request_id FROM `{database}`.{EVALUATIONS}
      WHERE evaluator_id = {{eid:String}} AND ts >= {{since:DateTime64(3, 'UTC')}})
  {extra_where}
ORDER BY timestamp
LIMIT {{limit:UInt32}}"""
    rows = client.query(sql, parameters=parameters).result_rows
    width = len(CANDIDATE_COLUMNS)
    return [Candidate(*row[:width], extras=tuple(row[width:])) for row in rows]


def written_last_minute(client, database: str, evaluator_id: str, now: datetime) -> int:
    rows = client.query(
        f"SELECT count() FROM `{database}`.{EVALUATIONS} WHERE evaluator_id = {{eid:String}} "
        f"AND ts > {{since:DateTime64(3, 'UTC')}}",
        parameters={"eid": evaluator_id, "since": _naive(now) - timedelta(seconds=60)}).result_rows
    return int(rows[0][0]) if rows else 0


def spent_today(client, database: str, evaluator: str, now: datetime) -> float:
    """USD an evaluator (by name: a new rubric does not reset the day's budget) spent since 00:00 UTC."""
    day = _naive(now).replace(hour=0, minute=0, second=0, microsecond=0)
    rows = client.query(
        f"SELECT sum(cost_usd) FROM `{database}`.{EVALUATIONS} WHERE evaluator = {{name:String}} "
        f"AND ts >= {{day:DateTime64(3, 'UTC')}}", parameters={"name": evaluator, "day": day}).result_rows
    return float(rows[0][0] or 0.0) if rows else 0.0
