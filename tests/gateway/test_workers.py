"""`sluice serve --workers 2`: two worker processes behind one port, one telemetry
collector (the embedded chDB admits one process), every request in the report, and a
clean stop that flushes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai

from tests.mock_server import free_port


def _sample(text: str, name: str, label: str = "") -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and label in line)


def _wait_ready(url: str, process: subprocess.Popen, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("gateway workers did not become ready")


def test_two_workers_share_one_collector(tmp_path: Path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "SLUICE_DATA_DIR": str(tmp_path / "data")}
    env.pop("OPENAI_API_KEY", None)
    env.pop("ANTHROPIC_API_KEY", None)
    # No config file, no keys: the built-in mock provider, started by the parent.
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port), "--workers", "2"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_ready(url, process)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        for i in range(40):                               # new connections spread over both workers
            with httpx.Client() as fresh:
                answer = fresh.post(f"{url}/v1/chat/completions", json={
                    "model": "mock-gpt", "messages": [{"role": "user", "content": f"hello {i}"}]})
            assert answer.status_code == 200
        client.chat.completions.create(model="mock-gpt", messages=[{"role": "user", "content": "sdk"}])
        time.sleep(1.0)              # both workers' shippers hand their queues over (every 50 ms)
        report = httpx.get(f"{url}/sluice/report?since=1h", timeout=30)
        assert report.status_code == 200, report.text
        line = next(row for row in report.text.splitlines() if row.strip().startswith("mock-gpt"))
        assert int(line.split()[1]) == 41          # one worker answers for both: one collector
        # /metrics, whichever worker answers, counts both workers' requests (merged in the
        # collector) and the collector's writer counters once.
        for _ in range(6):
            with httpx.Client() as fresh:
                metrics = fresh.get(f"{url}/metrics").text
            assert _sample(metrics, "sluice_requests_total") == 41
            assert _sample(metrics, "sluice_telemetry_rows_written_total", 'queue="requests"') == 41
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert "starting 2 workers" in output
    assert output.count("Application startup complete") == 2
    assert not (tmp_path / "data" / "telemetry.sock").exists()        # the collector stopped

    # After the stop, every request is in ClickHouse (read from a fresh process).
    code = ("import clickhouse_connect, sys\n"
            f"c = clickhouse_connect.get_client(dsn='chdb://{(tmp_path / 'data' / 'clickhouse').resolve()}')\n"
            "print(c.query('SELECT count() FROM sluice.llm_requests').result_rows[0][0])")
    count = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert count.stdout.strip().splitlines()[-1] == "41", count.stderr
