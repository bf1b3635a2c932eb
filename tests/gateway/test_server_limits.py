"""Connection limits (gateway/connections.py): slow and idle connections are closed, caps refuse
with an answer, oversized heads get 431 and oversized bodies 413, each in the caller's
wire format, and health checks answer through all of it.

The gateways here need no provider: every request is answered (or refused) before one
would be called. Timeouts are fractions of a second, so each test takes about one.
"""

from __future__ import annotations

import contextlib
import os
import resource
import select
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

from gateway.app import create_app
from gateway.config import parse_config
from gateway.server import GatewayServer, uvicorn_config
from tests.mock_server import free_port

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="127.0.0.2 and /proc are Linux's")

FAST = {"header_timeout_s": 0.5, "body_timeout_s": 0.5, "keep_alive_timeout_s": 0.5}


def _config(**server) -> dict:
    return {"server": {"max_body_bytes": 64 * 1024, **server}, "telemetry": {"enabled": False},
            "cache": {"enabled": False}, "providers": {}, "models": {}}


@contextlib.contextmanager
def serving(**server) -> Iterator[int]:
    """A gateway with these `server:` settings on a free port, in a thread; yields the port."""
    cfg = parse_config(_config(**server), {})
    port = free_port()
    gateway = GatewayServer(uvicorn_config(create_app(cfg), cfg, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=gateway.run, daemon=True)
    thread.start()
    try:
        _wait_ready(port)
        yield port
    finally:
        gateway.should_exit = True
        thread.join(timeout=10)


def _wait_ready(port: int, timeout_s: float = 20.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process is None or process.poll() is None, "the gateway exited"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError("the gateway did not become ready")


def _connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def _read_until_closed(sock: socket.socket, timeout_s: float) -> tuple[bytes, bool]:
    """Everything the server sends until it closes (True) or `timeout_s` passes (False)."""
    sock.settimeout(timeout_s)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        return data, False
    except ConnectionResetError:
        return data, True
    return data, True


def _answer(raw: bytes) -> tuple[int, dict[str, str], dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, orjson.loads(body)


def test_slowloris_connections_are_closed_after_the_header_timeout():
    """100 clients each sending a header line every 0.2 s: each gets a 408 (JSON, the
    caller's format) and is closed once the 0.5 s header timeout has passed."""
    with serving(**FAST) as port:
        socks = []
        for i in range(100):
            sock = _connect(port)
            path = b"/v1/messages" if i % 2 else b"/v1/chat/completions"
            sock.sendall(b"POST " + path + b" HTTP/1.1\r\nHost: sluice\r\n")
            sock.setblocking(False)
            socks.append(sock)
        started = time.monotonic()
        received = {sock: b"" for sock in socks}
        closed_at: dict[socket.socket, float] = {}
        next_line = started
        while len(closed_at) < len(socks) and time.monotonic() - started < 4.0:
            if time.monotonic() >= next_line:                     # the slow drip
                for n, sock in enumerate(socks):
                    if sock not in closed_at:
                        with contextlib.suppress(OSError):
                            sock.send(b"X-Drip-%d: x\r\n" % n)
                next_line += 0.2
            readable, _, _ = select.select([s for s in socks if s not in closed_at], [], [], 0.05)
            for sock in readable:
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                received[sock] += chunk
                if not chunk:
                    closed_at[sock] = time.monotonic() - started
        for sock in socks:
            sock.close()
    assert len(closed_at) == 100, f"{100 - len(closed_at)} slow connections still open after 4 s"
    assert max(closed_at.values()) < 2.5
    for i, sock in enumerate(socks):
        status, headers, body = _answer(received[sock])
        assert status == 408 and headers["connection"] == "close"
        if i % 2:
            assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
        else:
            assert body["error"]["code"] == "request_timeout"


def test_idle_connections_and_slow_bodies_are_closed():
    with serving(**FAST) as port:
        fresh = _connect(port)                                     # connects, never sends
        data, closed = _read_until_closed(fresh, 3.0)
        assert closed and data == b""                              # nothing was asked: no answer

        kept = _connect(port)                                      # one request, then idle
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: sluice\r\n\r\n")
        data, closed = _read_until_closed(kept, 3.0)
        assert closed and data.startswith(b"HTTP/1.1 200")

        slow = _connect(port)                                      # the body never completes
        slow.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: sluice\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"model\":")
        started = time.monotonic()
        data, closed = _read_until_closed(slow, 3.0)
        assert closed and time.monotonic() - started < 2.5
        status, _, body = _answer(data)
        assert status == 408 and body["type"] == "error"
        assert "body was not received" in body["error"]["message"]
        for sock in (fresh, kept, slow):
            sock.close()
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200


def test_per_client_cap_refuses_the_next_connection_while_other_clients_are_served():
    with serving(max_connections_per_client=5, header_timeout_s=5) as port:
        held = [_connect(port) for _ in range(5)]                  # 127.0.0.1 at its cap
        time.sleep(0.1)
        extra = _connect(port)
        extra.sendall(b"GET /v1/models HTTP/1.1\r\nHost: sluice\r\n\r\n")
        data, closed = _read_until_closed(extra, 3.0)
        assert closed
        status, headers, body = _answer(data)
        assert status == 503 and headers["retry-after"] == "1"
        assert body["error"]["code"] == "too_many_connections" and "limit is 5" in body["error"]["message"]

        anthropic = _connect(port)                                 # the refusal speaks the caller's format
        anthropic.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: sluice\r\nContent-Length: 2\r\n\r\n{}")
        status, _, body = _answer(_read_until_closed(anthropic, 3.0)[0])
        assert status == 503 and body["type"] == "error" and body["error"]["type"] == "api_error"

        probe = _connect(port)                                     # health probes are still answered
        probe.sendall(b"GET /healthz HTTP/1.1\r\nHost: sluice\r\n\r\n")
        assert _read_until_closed(probe, 3.0)[0].startswith(b"HTTP/1.1 200")

        other = _connect(port, source="127.0.0.2")                 # another client is served as usual
        other.sendall(b"GET /v1/models HTTP/1.1\r\nHost: sluice\r\n\r\n")
        other.settimeout(3.0)
        assert other.recv(65536).startswith(b"HTTP/1.1 200")
        for sock in (*held, extra, anthropic, probe, other):
            sock.close()


def test_global_cap_refuses_with_503_and_keeps_health_checks_answered():
    with serving(max_connections=4, header_timeout_s=5) as port:
        held = [_connect(port, source=f"127.0.0.{3 + i}") for i in range(4)]
        time.sleep(0.1)
        refused = _connect(port, source="127.0.0.2")
        refused.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: sluice\r\nContent-Length: 2\r\n\r\n{}")
        status, _, body = _answer(_read_until_closed(refused, 3.0)[0])
        assert status == 503 and body["error"]["type"] == "service_unavailable"
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=3).status_code == 200
        for sock in held:
            sock.close()
        time.sleep(0.1)
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=3).status_code == 200


def test_healthz_answers_while_many_half_open_connections_are_held(tmp_path: Path):
    """A `sluice serve` with 512 file descriptors and 600 half-open connections held
    against it: it never runs out of descriptors, and /healthz still answers (uvicorn
    alone accepted until EMFILE, after which nothing was accepted, health checks included)."""
    config = tmp_path / "sluice.yaml"
    config.write_text(yaml.safe_dump(_config(max_connections=100, max_upstream_connections=10,
                                             header_timeout_s=30)))
    port = free_port()

    def low_fd_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (512, 512))

    env = {**os.environ, "SLUICE_DATA_DIR": str(tmp_path / "data")}
    log = (tmp_path / "gateway.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--config", str(config),
                                "--port", str(port)], cwd=tmp_path, env=env, stdout=log,
                               stderr=subprocess.STDOUT, preexec_fn=low_fd_limit)
    held: list[socket.socket] = []
    try:
        _wait_ready(port, process=process)
        for _ in range(600):
            sock = socket.socket()
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                sock.connect(("127.0.0.1", port))
            held.append(sock)
        time.sleep(0.5)
        for sock in held:                                          # half-open: a head that never ends
            with contextlib.suppress(OSError):
                sock.send(b"GET /v1/models HTTP/1.1\r\n")
        started = time.monotonic()
        answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert answer.status_code == 200 and time.monotonic() - started < 3
        open_fds = len(os.listdir(f"/proc/{process.pid}/fd"))
        assert open_fds < 400, f"the gateway holds {open_fds} descriptors"
    finally:
        for sock in held:
            sock.close()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
    assert process.returncode == 0, (tmp_path / "gateway.log").read_text()[-3000:]


def test_a_60_kb_header_gets_431_in_the_callers_format():
    with serving() as port:                                        # the default max_header_bytes
        big = {"x-big": "a" * 60_000}
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json={}, headers=big, timeout=5)
        assert answer.status_code == 431
        assert answer.headers["connection"] == "close"
        assert answer.json()["error"]["code"] == "request_header_fields_too_large"
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/messages", json={}, headers=big, timeout=5)
        assert answer.status_code == 431
        assert answer.json()["type"] == "error" and "32768 bytes" in answer.json()["error"]["message"]
        # sent in pieces, the head is refused as soon as it is over the limit
        sock = _connect(port)
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: sluice\r\n")
        for _ in range(40):
            with contextlib.suppress(OSError):
                sock.sendall(b"X-Filler: " + b"f" * 1000 + b"\r\n")
        status, _, body = _answer(_read_until_closed(sock, 3.0)[0])
        assert status == 431 and body["error"]["type"] == "invalid_request_error"
        sock.close()
        # headers just under the limit are served
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models", headers={"x-big": "a" * 30_000}).status_code == 200


def test_a_malformed_request_gets_400_in_the_callers_format():
    with serving() as port:
        sock = _connect(port)
        sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: sluice\r\nContent-Length: x\r\n\r\n")
        status, headers, body = _answer(_read_until_closed(sock, 3.0)[0])
        assert status == 400 and headers["connection"] == "close"
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
        sock.close()


def test_an_over_limit_body_gets_413_fast_or_slow():
    with serving(**FAST) as port:
        url = f"http://127.0.0.1:{port}"
        big = b"{" + b" " * (2 << 20) + b"}"                       # 2 MB against a 64 KB limit, at once
        answer = httpx.post(f"{url}/v1/chat/completions", content=big, timeout=10,
                            headers={"content-type": "application/json"})
        assert answer.status_code == 413 and answer.json()["error"]["code"] == "request_too_large"

        def slowly() -> Iterator[bytes]:                           # chunked, no length announced
            for _ in range(8):
                yield b" " * 16384
                time.sleep(0.02)

        answer = httpx.post(f"{url}/v1/messages", content=slowly(), timeout=10)
        assert answer.status_code == 413 and answer.json()["error"]["type"] == "request_too_large"
        # a raw client that writes the whole body before reading gets the answer too, and
        # the connection carries its next request
        sock = _connect(port)
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: sluice\r\nContent-Length: %d\r\n\r\n"
                     % len(big) + big + b"GET /healthz HTTP/1.1\r\nHost: sluice\r\n\r\n")
        sock.settimeout(5)
        received = b""
        while received.count(b"HTTP/1.1 ") < 2:
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
        assert received.startswith(b"HTTP/1.1 413") and b"HTTP/1.1 200" in received
        sock.close()
