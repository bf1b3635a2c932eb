"""`sluice report`: traffic, errors, latency, tokens, cost and cache/fallback rates.

One aggregate query over `llm_requests` grouped by model, deployment, tenant or provider,
plus a totals row, rendered as a plain-text table. Definitions:
- error rate: requests with status >= 400 or an error type, over all requests;
- latency and TTFT percentiles: ClickHouse `quantiles` (exact interpolation under 8192
  rows a group, sampled above); TTFT over streamed requests only;
- cache hit rate: hits (exact or semantic) over requests that consulted the cache
  (hit, semantic-hit, miss); bypass/off/error are not lookups;
- fallback rate: requests answered by a fallback deployment, over all requests;
- limited: requests the gateway's rate limits or budgets refused (429), over all requests.
User traffic only: the monitor's own calls (`traffic = 'evaluator'`: self-consistency
re-asks, judge calls) are not in any row; their cost is `evaluations.cost_usd`.
`--by key` groups by the key's non-secret id; run through the gateway (`/sluice/report`),
`--by key` and `--by tenant` also list each budget's spend and what is left of it now.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import timedelta

from clickhouse_connect.driver.client import Client

GROUP_COLUMNS = {"model": "public_model", "deployment": "deployment", "tenant": "tenant",
                 "provider": "provider", "key": "key_id"}
_SINCE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_since(text: str) -> timedelta:
    """ "30m", "1h", "7d" (also "45s", "2w") -> timedelta; ValueError names the flag."""
    m = _SINCE.match(text or "")
    if not m or int(m.group(1)) == 0:
        raise ValueError(f"--since: expected a duration like 30m, 1h or 7d, got {text!r}")
    return timedelta(seconds=int(m.group(1)) * _UNIT_SECONDS[m.group(2)])


@dataclass(frozen=True, slots=True)
class ReportRow:
    key: str
    requests: int
    error_rate: float
    latency_ms: tuple[float | None, float | None, float | None]   # p50, p95, p99
    ttft_ms: tuple[float | None, float | None, float | None]
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    cache_hit_rate: float | None      # None when no request consulted the cache
    fallback_rate: float
    limited_rate: float = 0.0


_SELECT = """
SELECT
    {key} AS key,
    count() AS requests,
    countIf(status_code >= 400 OR error_type != '') / count() AS error_rate,
    quantiles(0.5, 0.95, 0.99)(latency_ms) AS latency,
    quantilesIf(0.5, 0.95, 0.99)(ttft_ms, stream AND ttft_ms IS NOT NULL) AS ttft,
    ifNull(sum(input_tokens), 0) AS input_tokens,
    ifNull(sum(output_tokens), 0) AS output_tokens,
    sum(cost_usd) AS cost_usd,
    countIf(cache_status IN ('hit', 'semantic-hit')) AS hits,
    countIf(cache_status IN ('hit', 'semantic-hit', 'miss')) AS lookups,
    countIf(fallback) / count() AS fallback_rate,
    countIf(limited != '') / count() AS limited_rate
FROM `{db}`.llm_requests
WHERE timestamp >= now64(3) - toIntervalSecond({seconds}) AND traffic = 'user'
"""


def _q(values: list[float] | None) -> tuple[float | None, float | None, float | None]:
    vals = [None if v is None or math.isnan(v) else float(v) for v in (values or [])]
    vals += [None] * (3 - len(vals))
    return vals[0], vals[1], vals[2]


def _row(r: tuple) -> ReportRow:
    key, requests, err, lat, ttft, tin, tout, cost, hits, lookups, fb, limited = r
    return ReportRow(
        key=str(key), requests=int(requests), error_rate=float(err), latency_ms=_q(lat),
        ttft_ms=_q(ttft), input_tokens=int(tin), output_tokens=int(tout),
        cost_usd=None if cost is None else float(cost),
        cache_hit_rate=(hits / lookups) if lookups else None, fallback_rate=float(fb),
        limited_rate=float(limited),
    )


def report_rows(
    client: Client, database: str, since: str = "1h", by: str = "model",
) -> tuple[list[ReportRow], ReportRow | None]:
    """(one row per group, busiest first; the totals row or None when there is no traffic)."""
    if by not in GROUP_COLUMNS:
        raise ValueError(f"--by: expected one of {', '.join(GROUP_COLUMNS)}, got {by!r}")
    if not _IDENT.match(database):
        raise ValueError(f"invalid ClickHouse database name: {database!r}")
    seconds = int(parse_since(since).total_seconds())
    grouped = _SELECT.format(key=GROUP_COLUMNS[by], db=database, seconds=seconds) + \
        "GROUP BY key ORDER BY requests DESC, key"
    rows = [_row(r) for r in client.query(grouped).result_rows]
    if not rows:
        return [], None
    total = client.query(_SELECT.format(key="'TOTAL'", db=database, seconds=seconds))
    return rows, _row(total.result_rows[0])


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}" if v >= 100 else f"{v:.1f}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.1f}%"


def _usd(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def render(rows: list[ReportRow], total: ReportRow | None, *, since: str, by: str) -> str:
    """A fixed-width text table."""
    title = f"Sluice report: last {since}, by {by}"
    if total is None:
        return f"{title}\n(no requests)\n"
    header = [by, "requests", "errors", "lat p50", "p95", "p99", "ttft p50", "p95", "p99",
              "tok in", "tok out", "cost $", "cache hit", "fallback", "limited"]
    lines = []
    for r in [*rows, total]:
        lines.append([
            r.key or "(none)", str(r.requests), _pct(r.error_rate),
            *(_ms(v) for v in r.latency_ms), *(_ms(v) for v in r.ttft_ms),
            str(r.input_tokens), str(r.output_tokens), _usd(r.cost_usd),
            _pct(r.cache_hit_rate), _pct(r.fallback_rate), _pct(r.limited_rate),
        ])
    widths = [max(len(header[i]), *(len(line[i]) for line in lines)) for i in range(len(header))]

    def fmt(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    rule = "-" * len(fmt(header))
    body = [fmt(line) for line in lines[:-1]]
    return "\n".join([title, "(latency and TTFT in ms)", fmt(header), rule, *body, rule,
                      fmt(lines[-1])]) + "\n"


def report(client: Client, database: str, since: str = "1h", by: str = "model") -> str:
    """The text report `sluice report --since 1h --by model` prints."""
    rows, total = report_rows(client, database, since, by)
    return render(rows, total, since=since, by=by)
