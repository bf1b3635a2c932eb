"""wrk's report and the harness's Lua script: p50/p95/p99, errors, request counts."""

from __future__ import annotations

import math

from bench.loadgen import (
    PERCENTILES_LINE,
    UNIQUE_MARKER,
    LoadSpec,
    parse_wrk,
    percentile,
    wrk_script,
)

WRK_REPORT = """Running 1s test @ http://127.0.0.1:40123/v1/chat/completions
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.17ms  511.00us   8.34ms   90.12%
    Req/Sec     3.45k   120.11     3.70k    70.00%
  Latency Distribution
     50%    2.10ms
     75%    2.30ms
     90%    2.60ms
     99%    4.39ms
  6872 requests in 1.00s, 5.12MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 3
Requests/sec:   6871.52
Transfer/sec:      5.11MB
"""


def test_percentiles_come_from_the_done_line() -> None:
    result = parse_wrk(WRK_REPORT + f"{PERCENTILES_LINE} p50=2104 p95=2950 p99=4391\n")
    assert (result.p50_ms, result.p95_ms, result.p99_ms) == (2.104, 2.95, 4.391)
    assert result.requests == 6872
    assert result.seconds == 1.0
    assert result.requests_per_second == 6871.52
    assert result.errors == 3 + 3  # non-2xx + socket errors


def test_without_the_done_line_the_latency_table_is_read_and_p95_is_unknown() -> None:
    result = parse_wrk(WRK_REPORT)
    assert (result.p50_ms, result.p99_ms) == (2.10, 4.39)
    assert math.isnan(result.p95_ms)


def test_units_of_the_latency_table() -> None:
    report = (WRK_REPORT.replace("     50%    2.10ms", "     50%  850.00us")
              .replace("     99%    4.39ms", "     99%    1.20s"))
    result = parse_wrk(report)
    assert (result.p50_ms, result.p99_ms) == (0.85, 1200.0)


def test_script_prints_the_three_percentiles_and_builds_unique_bodies() -> None:
    spec = LoadSpec("http://127.0.0.1:1/v1/chat/completions", f'{{"p": "{UNIQUE_MARKER}"}}'.encode(),
                    {"Authorization": "Bearer k"})
    script = wrk_script(spec)
    assert "function done(summary, latency, requests)" in script
    assert "latency:percentile(95)" in script
    assert PERCENTILES_LINE in script
    assert 'local prefix = [==[{"p": "]==]' in script
    assert UNIQUE_MARKER not in script
    fixed = wrk_script(LoadSpec(spec.url, b'{"p": "same"}', {}))
    assert 'wrk.body = [==[{"p": "same"}]==]' in fixed
    assert "function done(" in fixed


def test_nearest_rank_percentile() -> None:
    ordered = [float(i) for i in range(1, 101)]
    assert (percentile(ordered, 50), percentile(ordered, 95), percentile(ordered, 99)) == (50.0, 95.0, 99.0)
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))
