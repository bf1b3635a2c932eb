"""The TTFT probe against the real mock (paced, one connection, well under a second), the
SSE content test, and peak RSS of a real process tree."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from bench.probe import TtftProbe, has_content
from bench.processes import ManagedProcess, parse_status_kb
from bench.run import request_body
from tests.mock_server import start_mock

LATENCY_MS = 40
TOKENS_PER_SECOND = 50  # 20 ms between events: the role-only chunk first, then content


@pytest.fixture(scope="module")
def paced_mock() -> Iterator[str]:
    base_url, stop = start_mock(latency_ms=LATENCY_MS, tokens_per_second=TOKENS_PER_SECOND, output_tokens=3,
                                api_key="sk-bench")
    yield base_url
    stop()


def chunk(delta: dict, choices: bool = True) -> bytes:
    body = {"choices": [{"index": 0, "delta": delta}]} if choices else {"choices": [], "usage": {"total_tokens": 3}}
    return b"data: " + orjson.dumps(body) + b"\n"


def test_content_bearing_events() -> None:
    assert has_content(chunk({"content": "Hello"}))
    assert has_content(chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]}))
    assert not has_content(chunk({"role": "assistant", "content": ""}))
    assert not has_content(chunk({}, choices=False))
    assert not has_content(b"data: [DONE]\n")
    assert not has_content(b": keep-alive\n")
    assert not has_content(b"data: {not json\n")


def test_probe_times_the_first_content_event(paced_mock: str) -> None:
    url = f"{paced_mock}/v1/chat/completions"
    headers = {"Authorization": "Bearer sk-bench", "Content-Type": "application/json"}
    probe = TtftProbe(url, request_body("m1", stream=True, unique=True), headers, duration=0.3)
    started = time.perf_counter()
    probe.start()
    result = probe.join()
    assert time.perf_counter() - started < 2
    assert result.errors == 0
    assert result.samples >= 2  # each stream: 40 ms + 4 events 20 ms apart
    # latency, then the role-only chunk, then 20 ms to the first word
    assert LATENCY_MS + 15 <= result.p50_ms <= LATENCY_MS + 60
    assert result.p99_ms >= result.p50_ms


def test_probe_counts_failed_streams(paced_mock: str) -> None:
    probe = TtftProbe(f"{paced_mock}/v1/chat/completions", request_body("m1", stream=True, unique=False),
                      {"Authorization": "Bearer wrong-key"}, duration=0.1)
    probe.start()
    result = probe.join()
    assert result.samples == 0 and result.errors >= 1


def test_peak_rss_sums_the_process_tree(tmp_path: Path) -> None:
    # a parent that holds ~40 MB and a child that holds ~60 MB, both still running
    child = "b = bytearray(60 * 2**20); import time; time.sleep(30)"
    parent = (f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {child!r}]); "
              "b = bytearray(40 * 2**20); print('ready', flush=True); time.sleep(30)")
    process = ManagedProcess("tree", [sys.executable, "-c", parent], tmp_path / "tree.log", own_group=True)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and process.peak_rss_mb() < 100:
            time.sleep(0.05)
        assert 100 <= process.peak_rss_mb() < 200
    finally:
        process.stop()


def test_status_field_parsing() -> None:
    status = "Name:\tpython\nVmPeak:\t  300 kB\nVmHWM:\t   123456 kB\nVmRSS:\t  1000 kB\n"
    assert parse_status_kb(status, "VmHWM") == 123456
    assert parse_status_kb("Name:\tkworker\n", "VmHWM") == 0
