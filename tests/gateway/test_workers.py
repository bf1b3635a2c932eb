"""`sluice serve --workers 2`: two worker processes behind one port, one telemetry
collector (the embedded chDB admits one process), every request in the report, and a
clean stop that flushes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from tests.mock_server import free_port, start_mock


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
        # collector) and the rows written once each. Written rows are counted from the
        # collector's acknowledgements, which reach each worker within its ack interval:
        # wait for them rather than race them.
        deadline = time.monotonic() + 20
        seen: list[tuple[float, float]] = []
        while time.monotonic() < deadline:
            with httpx.Client() as fresh:
                metrics = fresh.get(f"{url}/metrics").text
            seen.append((_sample(metrics, "sluice_requests_total"),
                         _sample(metrics, "sluice_telemetry_rows_written_total", 'queue="requests"')))
            if len(seen) >= 6 and seen[-6:] == [(41, 41)] * 6:
                break
            time.sleep(0.2)
        assert seen[-6:] == [(41, 41)] * 6, seen[-10:]
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


def _children() -> dict[int, list[int]]:
    """ppid -> pids, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    return children


def _descendants(pid: int) -> set[int]:
    children, found, todo = _children(), set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _files_containing(secrets: list[bytes], root: Path, since: float, skip: set[Path]) -> list[Path]:
    """Regular files under `root` changed since `since` that contain one of `secrets`."""
    found = []
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory) / name
            try:
                info = path.lstat()
                if not stat.S_ISREG(info.st_mode) or info.st_mtime < since or info.st_size > 50_000_000 \
                        or path in skip:
                    continue
                data = path.read_bytes()
            except OSError:
                continue
            if any(secret in data for secret in secrets):
                found.append(path)
    return found


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_sigkill_of_the_parent_leaves_no_worker_no_collector_no_port_and_no_secret_on_disk(tmp_path: Path):
    """The parent of `--workers 2` killed with SIGKILL: its workers and the telemetry
    collector exit within seconds and the port is free. While it served, no file in the
    temp directory, no environment and no command line held the gateway or provider key."""
    gateway_key = f"sluice-gateway-key-{uuid.uuid4().hex}"
    provider_key = f"sk-provider-key-{uuid.uuid4().hex}"
    secrets = [gateway_key.encode(), provider_key.encode()]
    mock_url, stop_mock = start_mock(api_key=provider_key)
    config = tmp_path / "sluice.yaml"
    config.write_text(yaml.safe_dump({
        "providers": {"mock": {"type": "openai", "base_url": f"{mock_url}/v1", "api_key": provider_key}},
        "models": {"m": {"deployments": [{"provider": "mock", "model": "m1"}]}},
        "keys": [{"key": gateway_key, "tenant": "team"}],
        "cache": {"enabled": False},
    }))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "SLUICE_DATA_DIR": str(tmp_path / "data")}
    log = tmp_path / "gateway.log"
    started = time.time() - 1
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--port", str(port),
             "--workers", "2"], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    family: set[int] = set()
    try:
        _wait_ready(url, process)
        answer = httpx.post(f"{url}/v1/chat/completions", headers={"authorization": f"Bearer {gateway_key}"},
                            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]}, timeout=10)
        assert answer.status_code == 200, answer.text
        family = _descendants(process.pid)
        assert len(family) >= 3, family                      # two workers and the collector, at least
        leaked = _files_containing(secrets, Path(tempfile.gettempdir()), started, skip={config})
        assert not leaked, f"files holding a key: {leaked}"
        for pid in (process.pid, *family):
            for what in ("environ", "cmdline"):
                with contextlib.suppress(OSError):
                    assert not any(s in Path(f"/proc/{pid}/{what}").read_bytes() for s in secrets), (pid, what)

        process.kill()
        process.wait()
        deadline = time.monotonic() + 8
        while any(_running(pid) for pid in family) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = {pid: Path(f"/proc/{pid}/cmdline").read_bytes()[:120] for pid in family if _running(pid)}
        assert not left, f"still running after the parent's SIGKILL: {left}"
        with socket.socket() as probe:                       # nobody listens on the port any more
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))
            probe.listen()
        assert not _files_containing(secrets, Path(tempfile.gettempdir()), started, skip={config})
        assert not any(s in log.read_bytes() for s in secrets)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for pid in family:                                   # whatever this test started and left
            if _running(pid):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        stop_mock()
