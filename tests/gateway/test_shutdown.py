"""SIGTERM on a real `sluice serve`: it stops accepting, lets the stream in flight finish,
flushes telemetry and exits 0, with one process or with workers; a drain that outlasts
`server.shutdown_timeout_s` is cut there."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import yaml

from tests.mock_server import free_port, start_mock

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

TOKENS = 30            # the mock streams them at 10 per second: a 3 s stream


@pytest.fixture(scope="module")
def paced_mock() -> Iterator[str]:
    url, stop = start_mock(tokens_per_second=10, output_tokens=TOKENS, api_key="sk-shutdown-test")
    yield url
    stop()


def write_config(path: Path, mock_url: str, *, telemetry: bool = False, **server) -> Path:
    path.write_text(yaml.safe_dump({
        "server": server,
        "providers": {"mock": {"type": "openai", "base_url": f"{mock_url}/v1", "api_key": "sk-shutdown-test"}},
        "models": {"m": {"deployments": [{"provider": "mock", "model": "m1"}]}},
        "telemetry": {"enabled": telemetry},
        "cache": {"enabled": False},
    }))
    return path


class Gateway:
    """`sluice serve` in a subprocess, its output in a file."""

    def __init__(self, tmp_path: Path, config: Path, *extra: str) -> None:
        self.workers = int(extra[extra.index("--workers") + 1]) if "--workers" in extra else 1
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / "gateway.log"
        self._log = self.log_path.open("w")
        env = {**os.environ, "SLUICE_DATA_DIR": str(tmp_path / "data")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--port", str(self.port),
             *extra], cwd=tmp_path, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def output(self) -> str:
        return self.log_path.read_text()

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Until /readyz answers and every worker has started."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200 and \
                        self.output.count("Application startup complete") >= self.workers:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("the gateway did not become ready:\n" + self.output)

    def wait(self, timeout_s: float) -> int:
        try:
            return self.process.wait(timeout_s)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()


class Stream(threading.Thread):
    """One streamed chat completion, read line by line in a thread."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.lines: list[str] = []
        self.first_chunk = threading.Event()
        self.error: Exception | None = None

    def run(self) -> None:
        body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "a long answer"}]}
        try:
            with httpx.stream("POST", f"{self.url}/v1/chat/completions", json=body, timeout=30) as answer:
                for line in answer.iter_lines():
                    if line:
                        self.lines.append(line)
                        self.first_chunk.set()
        except Exception as exc:        # noqa: BLE001 - the test reads it
            self.error = exc
        finally:
            self.first_chunk.set()

    @property
    def words(self) -> int:
        """Words of the answer received so far."""
        text = ""
        for line in self.lines:
            if line.startswith("data: {"):
                for choice in orjson.loads(line[6:]).get("choices", []):
                    text += choice.get("delta", {}).get("content") or ""
        return len(text.split())


def refuses_connections(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        try:
            sock.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
        except OSError:
            return False
    return False


def sigterm_during_a_stream(gateway: Gateway) -> Stream:
    """Start a stream, SIGTERM the gateway at its first chunk, check that the port refuses
    new connections while the stream goes on; returns the finished stream."""
    gateway.wait_ready()
    stream = Stream(gateway.url)
    stream.start()
    assert stream.first_chunk.wait(10) and stream.lines, stream.error
    gateway.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 2.0
    while not refuses_connections(gateway.port):
        assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
        time.sleep(0.05)
    assert stream.is_alive(), "the stream ended before the drain could be seen"
    stream.join(15)
    return stream


def test_sigterm_single_process_finishes_the_stream_flushes_and_exits_0(tmp_path: Path, paced_mock: str):
    gateway = Gateway(tmp_path, write_config(tmp_path / "sluice.yaml", paced_mock, telemetry=True))
    try:
        stream = sigterm_during_a_stream(gateway)
        status = gateway.wait(30)
    finally:
        gateway.kill()
    assert stream.error is None and stream.lines[-1] == "data: [DONE]"
    assert stream.words == TOKENS
    assert status == 0, gateway.output[-3000:]
    # The request row was flushed before the exit (read back from a fresh process).
    code = ("import clickhouse_connect\n"
            f"c = clickhouse_connect.get_client(dsn='chdb://{(tmp_path / 'data' / 'clickhouse').resolve()}')\n"
            "q = 'SELECT count(), any(status_code), any(finish_reason) FROM sluice.llm_requests'\n"
            "print(c.query(q).result_rows[0])")
    count = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert count.stdout.strip().splitlines()[-1] == "(1, 200, 'stop')", count.stderr


def test_sigterm_with_two_workers_finishes_the_stream_and_exits_0(tmp_path: Path, paced_mock: str):
    gateway = Gateway(tmp_path, write_config(tmp_path / "sluice.yaml", paced_mock), "--workers", "2")
    try:
        stream = sigterm_during_a_stream(gateway)
        status = gateway.wait(30)
    finally:
        gateway.kill()
    assert stream.error is None and stream.lines[-1] == "data: [DONE]"
    assert stream.words == TOKENS
    assert status == 0, gateway.output[-3000:]
    assert gateway.output.count("Application shutdown complete") == 2


def test_the_drain_stops_at_shutdown_timeout(tmp_path: Path):
    """A 10 s stream against server.shutdown_timeout_s 0.5: cut there; the process exits 0."""
    mock_url, stop_mock = start_mock(tokens_per_second=10, output_tokens=100, api_key="sk-shutdown-test")
    gateway = Gateway(tmp_path, write_config(tmp_path / "sluice.yaml", mock_url, shutdown_timeout_s=0.5))
    try:
        gateway.wait_ready()
        stream = Stream(gateway.url)
        stream.start()
        assert stream.first_chunk.wait(10)
        gateway.process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        status = gateway.wait(15)
        stopped_after = time.monotonic() - started
        stream.join(5)
    finally:
        gateway.kill()
        stop_mock()
    assert stopped_after < 3.0, gateway.output[-3000:]
    assert stream.words < 100 and "data: [DONE]" not in stream.lines
    assert status == 0, gateway.output[-3000:]


@pytest.mark.parametrize("workers", [1, 2])
def test_ops_port_serves_metrics_and_the_main_port_does_not(tmp_path, paced_mock, workers):
    """`server.ops_port`: /metrics and /sluice/* on their own port (as Kubernetes setups
    scrape them), 404 on the main port; the API is not served on the ops port."""
    ops_port = free_port()
    extra = ("--workers", str(workers)) if workers > 1 else ()
    gw = Gateway(tmp_path, write_config(tmp_path / "sluice.yaml", paced_mock, ops_port=ops_port), *extra)
    try:
        gw.wait_ready()
        ops = f"http://127.0.0.1:{ops_port}"
        assert httpx.get(f"{ops}/metrics", timeout=10).status_code == 200
        assert httpx.get(f"{ops}/healthz", timeout=10).status_code == 200
        hidden = httpx.get(f"{gw.url}/metrics", timeout=10)
        assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "unknown_url"
        api_on_ops = httpx.post(f"{ops}/v1/chat/completions", timeout=10,
                                json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
        assert api_on_ops.status_code == 404
        assert httpx.post(f"{gw.url}/v1/chat/completions", timeout=30,
                          json={"model": "m", "messages": [{"role": "user", "content": "x"}]}).status_code == 200
        gw.process.send_signal(signal.SIGTERM)
        assert gw.wait(30) == 0
    finally:
        if gw.process.poll() is None:
            gw.process.kill()
            gw.process.wait()
