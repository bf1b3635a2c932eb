"""What ClickHouse computes for a run: per segment and side, counts, quantiles and histograms.

One query per baseline range reads `llm_requests` once for both windows: every row falls
in the baseline side (0), the current side (1), or both (a pinned baseline may overlap the
current window: `arrayJoin` counts such a row on each side). Everything comes back
aggregated (a few hundred numbers per segment); only the samples of `samples.py` carry rows.

Definitions (docs/monitoring.md, "Drift"):
- ok: status < 400 and no error type; fresh: ok and not answered from the cache (a cache
  hit replays an older answer: its latency, length and text say nothing of the model now);
- error rate: 5xx, or a 429 the gateway's own limits did not produce, over all requests;
- guardrail block rate: requests with a `<guardrail>:block...` action, over all requests;
- empty answer: a fresh answer cut by the token limit, or one with no text and no tokens
  that is not a tool call;
- JSON validity: fresh answers to `response_format` requests that parse (`isValidJSON`);
- token histograms: exact counts per token count up to 255, then buckets 1/16 of an
  octave wide (4.4%), so a histogram stays a few hundred entries whatever the window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from monitoring.segments import SEGMENT_PARAM_TYPE, Segment, SegmentColumns
from monitoring.windows import Range

TOOL_CALL_FINISH = ("tool_calls", "tool_use")


@dataclass(slots=True)
class SideStats:
    """The aggregates of one segment in one window."""

    n_all: int = 0
    n_errors: int = 0
    n_blocked: int = 0
    n_ok: int = 0
    n_fresh: int = 0
    latency_p50: float | None = None
    latency_p95: float | None = None
    n_ttft: int = 0
    ttft_p50: float | None = None
    n_cost: int = 0
    cost_mean: float | None = None
    n_lookups: int = 0
    n_hits: int = 0
    n_empty: int = 0
    n_json: int = 0
    n_json_valid: int = 0
    n_text: int = 0
    n_embeddings: int = 0
    finish_reasons: dict[str, int] = field(default_factory=dict)
    prompt_tokens: dict[int, int] = field(default_factory=dict)
    completion_tokens: dict[int, int] = field(default_factory=dict)


def _bucket(column: str) -> str:
    value = f"ifNull({column}, 0)"
    return f"toUInt32(if({value} < 256, {value}, round(exp2(round(log2({value}) * 16) / 16))))"


def side_expression() -> str:
    return ("arrayJoin(arrayConcat("
            "if(timestamp >= {bs:DateTime64(3, 'UTC')} AND timestamp < {be:DateTime64(3, 'UTC')}, [0], []), "
            "if(timestamp >= {cs:DateTime64(3, 'UTC')} AND timestamp < {ce:DateTime64(3, 'UTC')}, [1], [])))")


def window_filter(columns: SegmentColumns) -> str:
    return ("((timestamp >= {bs:DateTime64(3, 'UTC')} AND timestamp < {be:DateTime64(3, 'UTC')}) "
            "OR (timestamp >= {cs:DateTime64(3, 'UTC')} AND timestamp < {ce:DateTime64(3, 'UTC')})) "
            "AND operation IN {ops:Array(String)}" + columns.user_traffic)


def naive_utc(value: datetime) -> datetime:
    return value if value.tzinfo is None else value.astimezone(timezone.utc).replace(tzinfo=None)


def window_parameters(current: Range, baseline: Range, operations: list[str]) -> dict:
    """Query parameters of the two windows (naive UTC: how the driver sends DateTime64)."""
    return {"cs": naive_utc(current.start), "ce": naive_utc(current.end), "bs": naive_utc(baseline.start),
            "be": naive_utc(baseline.end), "ops": list(operations)}


def segment_filter(columns: SegmentColumns, segments: list[Segment] | None, parameters: dict) -> str:
    if segments is None:
        return ""
    parameters["segments"] = [tuple(s) for s in segments]
    return f" AND {columns.key_tuple()} IN {{segments:{SEGMENT_PARAM_TYPE}}}"


def side_stats(client, database: str, columns: SegmentColumns, *, current: Range, baseline: Range,
               operations: list[str], response_format: str, segments: list[Segment] | None = None
               ) -> dict[Segment, dict[int, SideStats]]:
    """{segment: {0: baseline stats, 1: current stats}} for the segments with traffic."""
    parameters = window_parameters(current, baseline, operations)
    where = window_filter(columns) + segment_filter(columns, segments, parameters)
    fresh_len = f"fresh AND (finish_reason IN ('length', 'max_tokens') OR (finish_reason NOT IN " \
                f"{TOOL_CALL_FINISH!r} AND ifNull(output_tokens, 0) = 0 AND trimBoth(completion_text) = ''))"
    sql = f"""
WITH status_code < 400 AND error_type = '' AS ok,
     cache_status IN ('hit', 'semantic-hit') AS hit,
     ok AND NOT hit AS fresh,
     {response_format} AS rf
SELECT {columns.select()}, {side_expression()} AS side,
    count() AS n_all,
    countIf(status_code >= 500 OR (status_code = 429 AND limited = '')) AS n_errors,
    countIf(arrayExists(a -> position(a, ':block') > 0, guardrail_actions)) AS n_blocked,
    countIf(ok) AS n_ok,
    countIf(fresh) AS n_fresh,
    quantilesExactIf(0.5, 0.95)(latency_ms, fresh) AS latency,
    countIf(fresh AND ttft_ms IS NOT NULL) AS n_ttft,
    quantileExactIf(0.5)(ifNull(ttft_ms, 0), fresh AND ttft_ms IS NOT NULL) AS ttft_p50,
    countIf(fresh AND cost_usd IS NOT NULL) AS n_cost,
    avgIf(ifNull(cost_usd, 0), fresh AND cost_usd IS NOT NULL) AS cost_mean,
    countIf(cache_status IN ('hit', 'semantic-hit', 'miss')) AS n_lookups,
    countIf(hit) AS n_hits,
    countIf({fresh_len}) AS n_empty,
    countIf(fresh AND rf != '') AS n_json,
    countIf(fresh AND rf != '' AND isValidJSON(completion_text)) AS n_json_valid,
    countIf(fresh AND completion_text != '') AS n_text,
    countIf(length(prompt_embedding) > 0) AS n_embeddings,
    sumMapIf([toString(finish_reason)], [toUInt64(1)], fresh) AS finish_reasons,
    sumMapIf([{_bucket('input_tokens')}], [toUInt64(1)], ok AND input_tokens IS NOT NULL) AS prompt_tokens,
    sumMapIf([{_bucket('output_tokens')}], [toUInt64(1)], fresh AND output_tokens IS NOT NULL) AS completion_tokens
FROM `{database}`.llm_requests
WHERE {where}
GROUP BY {columns.group()}, side"""
    out: dict[Segment, dict[int, SideStats]] = {}
    result = client.query(sql, parameters=parameters)
    for row in result.named_results():
        segment = Segment(row["seg_public_model"], row["seg_deployment"], row["seg_tenant"],
                          row["seg_prompt_fingerprint"])
        latency = row["latency"] or [None, None]
        stats = SideStats(
            n_all=row["n_all"], n_errors=row["n_errors"], n_blocked=row["n_blocked"], n_ok=row["n_ok"],
            n_fresh=row["n_fresh"],
            latency_p50=_finite(latency[0]) if row["n_fresh"] else None,
            latency_p95=_finite(latency[1]) if row["n_fresh"] else None,
            n_ttft=row["n_ttft"], ttft_p50=_finite(row["ttft_p50"]) if row["n_ttft"] else None,
            n_cost=row["n_cost"], cost_mean=_finite(row["cost_mean"]) if row["n_cost"] else None,
            n_lookups=row["n_lookups"], n_hits=row["n_hits"], n_empty=row["n_empty"], n_json=row["n_json"],
            n_json_valid=row["n_json_valid"], n_text=row["n_text"], n_embeddings=row["n_embeddings"],
            finish_reasons=_as_map(row["finish_reasons"]), prompt_tokens=_as_map(row["prompt_tokens"]),
            completion_tokens=_as_map(row["completion_tokens"]))
        out.setdefault(segment, {})[int(row["side"])] = stats
    return out


def _as_map(pair) -> dict:
    """sumMap's (keys, values) tuple (or a map, by driver) -> dict."""
    if isinstance(pair, dict):
        return {k: int(v) for k, v in pair.items()}
    keys, values = pair
    return {k: int(v) for k, v in zip(keys, values)}


def _finite(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if value == value and value not in (float("inf"), float("-inf")) else None
