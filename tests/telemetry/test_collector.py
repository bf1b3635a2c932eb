"""The default writer: a collector process owns ClickHouse (telemetry/collector.py).

Real traffic through a running gateway reaches the embedded chDB through the collector;
a collector that dies degrades telemetry (counted drops), not serving, and is restarted;
the bounded queue in the gateway counts what it cannot hold.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pyarrow as pa
import pytest

from telemetry import RequestRecord
from telemetry.frames import recv_frame, send_frame
from tests.conftest import PRIMARY_KEY
from tests.telemetry.conftest import metric_value
from tests.gateway_server import start_gateway

GATEWAY_KEY = "sluice-collector-test-secret"


def _read_chdb(path: Path, sql: str) -> list:
    """Query a chDB directory from a fresh process (one engine per process and path)."""
    code = ("import json, sys, clickhouse_connect\n"
            f"c = clickhouse_connect.get_client(dsn='chdb://{path}')\n"
            "print(json.dumps(c.query(sys.argv[1]).result_rows, default=str))")
    done = subprocess.run([sys.executable, "-c", code, sql], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def gateway(primary, tmp_path):
    gw = start_gateway({
        "data_dir": str(tmp_path / "data"),
        # writer: process is the default. Normal priority: at SCHED_IDLE a collector gets no
        # CPU at all while the machine is saturated (a full test run, the busy loops the
        # dead-collector test is run beside), and these tests are not about priority.
        "telemetry": {"flush_interval_s": 0.05, "collector_priority": "normal"},
        "cache": {"enabled": False},
        "keys": [{"key": GATEWAY_KEY, "tenant": "team-c"}],
        "providers": {"primary": {"type": "openai", "base_url": f"{primary.url}/v1", "api_key": PRIMARY_KEY}},
        "models": {"gpt": {"deployments": [{"provider": "primary", "model": "m1"}]}},
    })
    yield gw
    gw.stop()


def test_traffic_lands_in_chdb_through_the_collector(gateway, tmp_path, wait_for):
    tel = gateway.gateway.telemetry
    assert tel.sink is None and tel.client is not None and tel.client.owner.alive
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=GATEWAY_KEY, max_retries=0)
    for i in range(5):
        client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": f"hello {i}"}])
    list(client.chat.completions.create(model="gpt", stream=True,
                                        messages=[{"role": "user", "content": "stream"}]))

    report = httpx.get(f"{gateway.url}/sluice/report?since=1h&by=model", timeout=30)
    assert report.status_code == 200
    gpt_line = next(line for line in report.text.splitlines() if line.strip().startswith("gpt"))
    assert gpt_line.split()[1] == "6"                          # requests column
    metrics = lambda: httpx.get(f"{gateway.url}/metrics").text      # noqa: E731
    assert wait_for(lambda: metric_value(metrics(), "sluice_telemetry_rows_written_total", queue="requests") >= 6,
                    timeout_s=10)
    assert metric_value(metrics(), "sluice_telemetry_rows_written_total", queue="spans") >= 6 * 2

    owner = tel.client.owner
    gateway.stop()                                            # flushes, then stops the collector
    assert not owner.alive
    chdb = (tmp_path / "data" / "clickhouse").resolve()
    rows = _read_chdb(chdb, "SELECT count(), countIf(stream), any(tenant) FROM sluice.llm_requests")
    assert rows == [[6, 1, "team-c"]]
    server_spans = _read_chdb(chdb, "SELECT count() FROM sluice.otel_traces WHERE SpanKind = 'Server'")
    assert server_spans == [[6]]
    stored = json.dumps(_read_chdb(chdb, "SELECT * FROM sluice.llm_requests"))
    stored += json.dumps(_read_chdb(chdb, "SELECT * FROM sluice.otel_traces"))
    assert GATEWAY_KEY not in stored and PRIMARY_KEY not in stored


def test_a_dead_collector_degrades_telemetry_not_serving(gateway, wait_for):
    """Serving goes on while the collector is dead; the gateway restarts it, resends what
    the dead one had not acknowledged, and every request ends up a row exactly once.

    Nothing here depends on timing: every wait is for a condition (with a deadline only so
    that a hang fails), and the assertion is exact. It used to allow for the requests the
    dead collector held and flush within 10 s, which a loaded machine did not always do."""
    tel = gateway.gateway.telemetry
    owner = tel.client.owner
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=GATEWAY_KEY, max_retries=0)
    client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "before"}])
    assert wait_for(lambda: tel.flush(10), timeout_s=600, every_s=0.2)

    os.kill(owner._process.pid, signal.SIGKILL)
    for i in range(20):                                       # served while it is down
        client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": f"during {i}"}])
    assert wait_for(lambda: owner.restarts >= 1 and owner.alive, timeout_s=600, every_s=0.2)
    client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "after"}])
    assert wait_for(lambda: tel.flush(10), timeout_s=600, every_s=0.2)
    text = httpx.get(f"{gateway.url}/sluice/report?since=1h&by=model", timeout=300).text
    rows = int(next(line for line in text.splitlines() if line.strip().startswith("gpt")).split()[1])
    metrics = httpx.get(f"{gateway.url}/metrics").text
    dropped = metric_value(metrics, "sluice_telemetry_rows_dropped_total", queue="requests")
    written = metric_value(metrics, "sluice_telemetry_rows_written_total", queue="requests")
    # Nothing the dead collector held was lost: resent to the new one, written once.
    assert (rows, dropped, written) == (22, 0, 22)


def test_the_gateway_queue_is_bounded_and_counts_drops(tmp_path):
    from telemetry import Telemetry, TelemetryConfig
    tel = Telemetry.from_config(TelemetryConfig(queue_max=10), tmp_path)
    # Not started: no collector, nothing ships; the queue holds 10 requests and counts the rest.
    for i in range(25):
        tel.record(RequestRecord(request_id=f"r{i}"))
    text = tel.metrics.render()[0].decode()
    assert metric_value(text, "sluice_telemetry_rows_dropped_total", queue="requests", reason="queue_full") == 15
    assert metric_value(text, "sluice_telemetry_queue_depth", queue="requests") == 10


def test_collector_answers_report_errors_in_band(tmp_path):
    from telemetry import TelemetryConfig
    from telemetry.collector import CollectorProcess
    proc = CollectorProcess(TelemetryConfig(), tmp_path)
    proc.start()
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(proc.socket_path))
            assert oct(proc.socket_path.stat().st_mode & 0o777) == "0o600"
            send_frame(sock, ("report", "1h", "colour"))
            status, message = recv_frame(sock)
            assert status == "error" and message.startswith("by must be")
            send_frame(sock, ("stats",))
            status, stats = recv_frame(sock)
            assert status == "ok" and stats["depth"] == {"requests": 0, "spans": 0}
            # serve() switched pyarrow to the retaining pool (unless the environment chose one)
            default = pa.default_memory_pool().backend_name     # this process never switched
            expected = default if os.environ.get("ARROW_DEFAULT_MEMORY_POOL") else _jemalloc_or(default)
            assert stats["arrow_pool"] == expected
    finally:
        proc.stop()
    assert not proc.alive


def _jemalloc_or(default: str) -> str:
    """"jemalloc" where this pyarrow has it (the collector's choice), else `default`."""
    try:
        pa.jemalloc_memory_pool()
    except (AttributeError, NotImplementedError):
        return default
    return "jemalloc"


@pytest.mark.parametrize(("preset", "expected"), [(None, "jemalloc"), ("system", "system")])
def test_the_collector_allocates_arrow_memory_from_a_retaining_pool(preset, expected):
    """jemalloc keeps a batch's pages for the next one (mimalloc, pyarrow's default here,
    hands them back and faults fresh ones in); an explicit choice is respected. In a
    subprocess: the pool is process-wide."""
    if expected == "jemalloc" and _jemalloc_or("none") != "jemalloc":
        pytest.skip("this pyarrow has no jemalloc")
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    if preset:
        env["ARROW_DEFAULT_MEMORY_POOL"] = preset
    code = "from telemetry.collector import use_retaining_arrow_pool; print(use_retaining_arrow_pool())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == expected
