"""The run's results as a Markdown table (and a JSON-able dict), ratios against direct."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from bench.loadgen import LoadResult


@dataclass(frozen=True)
class Row:
    target: str
    result: LoadResult | None  # None: the target could not run (see note)
    gateway_cpu_s_per_1k: float | None = None
    mock_cpu_s_per_1k: float | None = None
    note: str = ""


HEADER = ("| target | requests/s | p50 ms | p99 ms | vs direct | added p50 ms | errors "
          "| gateway CPU s/1k req | mock CPU s/1k req |")
RULE = "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"


def markdown_table(rows: list[Row]) -> str:
    measured = [row for row in rows if row.result is not None]
    # the direct row is the baseline; without one, the first measured row
    base_row = next((row for row in measured if row.target.startswith("direct")), measured[0] if measured else None)
    baseline = base_row.result if base_row else None
    lines = [HEADER, RULE]
    for row in rows:
        result = row.result
        if result is None:
            lines.append(f"| {row.target} | not run: {row.note} | | | | | | | |")
            continue
        ratio = result.requests_per_second / baseline.requests_per_second if baseline else math.nan
        added = result.p50_ms - baseline.p50_ms if baseline else math.nan
        lines.append(
            f"| {row.target} | {result.requests_per_second:,.0f} | {result.p50_ms:.2f} | {result.p99_ms:.2f} "
            f"| {ratio:.1%} | {added:+.2f} | {result.errors} | {_num(row.gateway_cpu_s_per_1k)} "
            f"| {_num(row.mock_cpu_s_per_1k)} |"
        )
    return "\n".join(lines)


def as_dict(row: Row) -> dict[str, Any]:
    result = row.result
    return {
        "target": row.target, "note": row.note,
        "generator": result.generator if result else None,
        "requests": result.requests if result else None,
        "seconds": result.seconds if result else None,
        "requests_per_second": result.requests_per_second if result else None,
        "p50_ms": result.p50_ms if result else None,
        "p99_ms": result.p99_ms if result else None,
        "errors": result.errors if result else None,
        "gateway_cpu_s_per_1k": row.gateway_cpu_s_per_1k,
        "mock_cpu_s_per_1k": row.mock_cpu_s_per_1k,
    }


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
