"""The run's results as a Markdown table (and a JSON-able dict), ratios against direct."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from bench.loadgen import LoadResult
from bench.probe import TtftResult


@dataclass(frozen=True)
class Row:
    target: str
    result: LoadResult | None  # None: the target could not run (see note)
    gateway_cpu_s_per_1k: float | None = None
    mock_cpu_s_per_1k: float | None = None
    ttft: TtftResult | None = None  # streams only
    peak_rss_mb: float | None = None  # the gateway's process tree (None: direct)
    note: str = ""
    rounds: tuple[float, ...] = ()  # req/s of every round, in order, when there were several


COLUMNS = ("target", "req/s", "vs direct", "p50 ms", "p95 ms", "p99 ms", "added p50 ms")
ROUNDS_COLUMN = "req/s by round"
TTFT_COLUMNS = ("TTFT p50 ms", "TTFT p99 ms", "added TTFT p50 ms")
TAIL_COLUMNS = ("errors", "gateway CPU s/1k req", "peak RSS MB")


def markdown_table(rows: list[Row], stream: bool = False) -> str:
    """One line per row; TTFT columns for streams. The direct row is the baseline of the
    ratio and the "added" columns (without one, the first measured row, and the ratio
    column names it). Rows measured in several rounds show the median round and, in a
    last column, every round's req/s."""
    measured = [row for row in rows if row.result is not None]
    base = next((row for row in measured if row.target.startswith("direct")), measured[0] if measured else None)
    versus = "vs direct" if base is None or base.target.startswith("direct") else f"vs {base.target}"
    with_rounds = any(row.rounds for row in rows)
    columns = (*COLUMNS[:2], versus, *COLUMNS[3:], *(TTFT_COLUMNS if stream else ()), *TAIL_COLUMNS,
               *((ROUNDS_COLUMN,) if with_rounds else ()))
    lines = ["| " + " | ".join(columns) + " |", "| --- |" + " ---: |" * (len(columns) - 1)]
    for row in rows:
        if row.result is None:
            cells = [row.target, f"not run: {row.note}", *[""] * (len(columns) - 2)]
        else:
            cells = [row.target, *_cells(row, base, stream)]
            if with_rounds:
                cells.append(" / ".join(f"{rate:,.0f}" for rate in row.rounds))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cells(row: Row, base: Row | None, stream: bool) -> list[str]:
    result = row.result
    assert result is not None
    baseline = base.result if base is not None else None
    cells = [
        f"{result.requests_per_second:,.0f}",
        _ratio(result.requests_per_second / baseline.requests_per_second) if baseline else "-",
        _ms(result.p50_ms), _ms(result.p95_ms), _ms(result.p99_ms),
        _added(result.p50_ms, baseline.p50_ms if baseline else None),
    ]
    if stream:
        ttft, base_ttft = row.ttft, base.ttft if base is not None else None
        cells += [_ms(ttft.p50_ms if ttft else None), _ms(ttft.p99_ms if ttft else None),
                  _added(ttft.p50_ms if ttft else None, base_ttft.p50_ms if base_ttft else None)]
    errors = str(result.errors)
    if row.ttft is not None and row.ttft.errors:
        errors += f" (+{row.ttft.errors} probe)"
    cells += [errors, _num(row.gateway_cpu_s_per_1k, 3), _num(row.peak_rss_mb, 0)]
    return cells


def as_dict(row: Row) -> dict[str, Any]:
    result = row.result
    return {
        "target": row.target, "note": row.note,
        **(asdict(result) if result else {}),
        "ttft": asdict(row.ttft) if row.ttft else None,
        "gateway_cpu_s_per_1k": row.gateway_cpu_s_per_1k,
        "mock_cpu_s_per_1k": row.mock_cpu_s_per_1k,
        "peak_rss_mb": row.peak_rss_mb,
        "rounds_requests_per_second": list(row.rounds),
    }


def _ratio(ratio: float) -> str:
    """A percentage, or "156x" past 10x (a cache hit against a 200 ms provider call)."""
    return f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.1%}"


def _ms(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}"


def _added(value: float | None, baseline: float | None) -> str:
    if value is None or baseline is None or math.isnan(value) or math.isnan(baseline):
        return "-"
    return f"{value - baseline:+.2f}"


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"
