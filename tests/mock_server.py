"""Start the mock upstream in a subprocess for a test session (shared by the gateway tests).

    base_url, stop = start_mock(latency_ms=5, api_key="sk-test")
    openai.OpenAI(base_url=f"{base_url}/v1", api_key="sk-test")
    anthropic.Anthropic(base_url=base_url, api_key="sk-test")
    ...
    stop()

A subprocess keeps the mock's uvloop off the test's event loop and lets a test kill it
like a real provider going away. `base_url` has no `/v1` (Anthropic's SDK adds it itself).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson

from gateway.mock import MockOptions

REPO_ROOT = Path(__file__).resolve().parent.parent
_LAUNCH = (
    "import sys, orjson\n"
    "from gateway.mock import MockOptions, run_mock_upstream\n"
    "options = orjson.loads(sys.argv[3])\n"
    "options['models'] = tuple(options.get('models', MockOptions().models))\n"
    "run_mock_upstream(sys.argv[1], int(sys.argv[2]), MockOptions(**options))\n"
)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def start_mock(port: int | None = None, host: str = "127.0.0.1", ready_timeout: float = 15.0,
               **options: object) -> tuple[str, Callable[[], None]]:
    """Start `run_mock_upstream` in a subprocess; returns (base_url, stop).

    `options` are `MockOptions` fields (latency_ms, tokens_per_second, output_tokens,
    embedding_dim, api_key, models, recorded_requests). Waits until GET /_mock/health
    answers; `stop()` terminates the process (idempotent).
    """
    known = {f.name for f in dataclasses.fields(MockOptions)}
    unknown = set(options) - known
    if unknown:
        raise TypeError(f"unknown MockOptions field(s): {sorted(unknown)}")
    port = port or free_port(host)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    log = tempfile.TemporaryFile()  # a file, not a pipe: a chatty server must never block on it
    process = subprocess.Popen(
        [sys.executable, "-c", _LAUNCH, host, str(port), orjson.dumps(options).decode()],
        cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    base_url = f"http://{host}:{port}"

    def stop() -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()

    deadline = time.monotonic() + ready_timeout
    while True:
        if process.poll() is not None:
            log.seek(0)
            error = log.read().decode(errors="replace")
            stop()
            raise RuntimeError(f"mock upstream exited with {process.returncode}:\n{error}")
        try:
            if httpx.get(f"{base_url}/_mock/health", timeout=0.5, trust_env=False).status_code == 200:
                return base_url, stop
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            stop()
            raise RuntimeError(f"mock upstream did not answer on {base_url} within {ready_timeout}s")
        time.sleep(0.05)

