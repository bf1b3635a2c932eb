"""The Markdown table: columns, ratios and "added" figures against direct, not-run rows."""

from __future__ import annotations

import math

from bench.loadgen import LoadResult
from bench.probe import TtftResult
from bench.report import Row, markdown_table
from bench.run import median_round


def load(rate: float, p50: float, p95: float = 0.0, p99: float = 0.0, errors: int = 0) -> LoadResult:
    return LoadResult("wrk", int(rate), 1.0, p50, p95, p99, errors, rate)


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_non_stream_table() -> None:
    rows = [
        Row("direct (mock)", load(20_000, 0.5, 0.8, 1.0)),
        Row("sluice:bare", load(5_000, 2.0, 2.5, 3.0, errors=2), gateway_cpu_s_per_1k=0.1234, peak_rss_mb=101.6),
        Row("litellm 1.106.2", None, note="litellm install failed (exit 1): ERROR: no matching distribution"),
    ]
    header, rule, direct, sluice, litellm = markdown_table(rows).splitlines()
    assert cells(header) == ["target", "req/s", "vs direct", "p50 ms", "p95 ms", "p99 ms", "added p50 ms",
                             "errors", "gateway CPU s/1k req", "peak RSS MB"]
    assert rule.count("---") == 10
    assert cells(direct) == ["direct (mock)", "20,000", "100.0%", "0.50", "0.80", "1.00", "+0.00", "0", "-", "-"]
    assert cells(sluice) == ["sluice:bare", "5,000", "25.0%", "2.00", "2.50", "3.00", "+1.50", "2", "0.123", "102"]
    assert cells(litellm)[:2] == ["litellm 1.106.2",
                                  "not run: litellm install failed (exit 1): ERROR: no matching distribution"]
    assert len(cells(litellm)) == 10


def test_stream_table_has_ttft_and_added_ttft() -> None:
    rows = [
        Row("direct (mock)", load(80, 170.0), ttft=TtftResult(5, 60.0, 62.0, 0)),
        Row("sluice:bare", load(79, 172.0), ttft=TtftResult(5, 61.5, 70.0, 1), peak_rss_mb=110.0),
    ]
    header, _, direct, sluice = markdown_table(rows, stream=True).splitlines()
    names = cells(header)
    assert names[7:10] == ["TTFT p50 ms", "TTFT p99 ms", "added TTFT p50 ms"]
    assert cells(direct)[7:10] == ["60.00", "62.00", "+0.00"]
    assert cells(sluice)[7:11] == ["61.50", "70.00", "+1.50", "0 (+1 probe)"]


def test_missing_p95_and_missing_ttft_show_a_dash() -> None:
    rows = [Row("direct (mock)", load(100, 1.0, math.nan, 2.0)), Row("sluice:bare", load(50, 2.0, 3.0, 4.0))]
    _, _, direct, sluice = markdown_table(rows, stream=True).splitlines()
    assert cells(direct)[4] == "-"
    assert cells(sluice)[7:10] == ["-", "-", "-"]


def test_without_a_direct_row_the_first_measured_row_is_the_baseline() -> None:
    rows = [Row("sluice:bare", None, note="no config"), Row("sluice:traced", load(400, 3.0)),
            Row("portkey 1.15.2", load(100, 9.0))]
    lines = markdown_table(rows).splitlines()
    assert cells(lines[0])[2] == "vs sluice:traced"
    assert cells(lines[3])[2] == "100.0%"
    assert cells(lines[4])[2] == "25.0%"
    assert cells(lines[4])[6] == "+6.00"


def test_ratios_past_ten_times_direct_read_as_multiples() -> None:
    rows = [Row("direct (mock)", load(79, 201.7)), Row("sluice:cache-exact (same prompt)", load(12_362, 1.2))]
    assert cells(markdown_table(rows).splitlines()[3])[2:7] == ["156x", "1.20", "0.00", "0.00", "-200.50"]


def test_rounds_keep_the_median_round_and_list_every_round() -> None:
    bare = [Row("sluice:bare", load(rate, p50)) for rate, p50 in ((10_000, 1.0), (9_000, 3.0), (11_000, 2.0))]
    traced = [Row("sluice:traced", load(rate, 2.0)) for rate in (8_000, 9_000, 8_800)]
    rows = [median_round(bare), median_round(traced)]
    assert rows[0].result.requests_per_second == 10_000 and rows[0].result.p50_ms == 1.0
    header, _, base, other = markdown_table(rows).splitlines()
    assert cells(header)[2] == "vs sluice:bare" and cells(header)[-1] == "req/s by round"
    assert cells(base)[-1] == "10,000 / 9,000 / 11,000"
    assert cells(other)[1:3] == ["8,800", "88.0%"]


def test_a_target_that_failed_in_any_round_is_reported_as_failed() -> None:
    rounds = [Row("sluice:traced", load(8_000, 2.0)), Row("sluice:traced", None, note="died under load")]
    assert median_round(rounds).note == "died under load"
    assert median_round(rounds[:1]) is rounds[0]
