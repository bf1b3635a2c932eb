"""The HTTP server: uvicorn on httptools with the gateway's connection handling
(gateway/connections.py: deadlines, connection caps, head size, answers in the caller's
wire format), and the shutdown uvicorn leaves to its user.

uvicorn, after draining on SIGTERM, re-raises the signal (exit status 143). Here
`GatewayServer` drains on SIGTERM / SIGINT (`server.shutdown_timeout_s`) and exits 0;
`run_workers` serves `--workers N` with each worker built from the resolved config handed
over through the spawn pipe (never a file, never the environment), dying with the parent
(`die_with_parent`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.server import HANDLED_SIGNALS
from uvicorn.supervisors import Multiprocess

from gateway.config import SluiceConfig
from gateway.connections import ConnectionLimits, GatewayHttpProtocol, fit_open_file_limit

logger = logging.getLogger("sluice")


class GatewayConfig(uvicorn.Config):
    """uvicorn's Config with the connection limits and, for `--workers`, the resolved
    Sluice config each worker builds its app from.

    The workers are spawned by multiprocessing, which pickles this object into a pipe the
    child reads once at start: the configuration, keys included, reaches the workers
    without a file on disk (the old way: a 0600 temp file, left behind when the parent
    was killed) and without the environment (readable in /proc/<pid>/environ by every
    process of the same user, shown by `ps e`, inherited by every child process)."""

    def __init__(self, app: Any, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.connection_limits = limits
        self._sluice: SluiceConfig | None = None
        self._parent_pid: int | None = None

    def hand_over(self, cfg: SluiceConfig, *, parent_pid: int) -> None:
        """Workers build their app from `cfg` (not from `app`) and die with `parent_pid`."""
        self._sluice = cfg
        self._parent_pid = parent_pid

    def load_app(self) -> Any:
        if self._sluice is None:
            return super().load_app()
        # In a worker: first make sure it cannot outlive the parent, then build the app.
        die_with_parent(self._parent_pid)
        from gateway.app import create_app
        cfg, self._sluice = self._sluice, None
        return create_app(cfg)


class GatewayServer(uvicorn.Server):
    """uvicorn's Server, minus re-raising the signal it drained on: after a clean drain a
    SIGTERM or Ctrl-C exits 0 (uvicorn re-raises it once shut down: status 143 or 130,
    which process managers report as a crash)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


class _Supervisor(Multiprocess):
    """uvicorn's worker supervisor, stopping at once on SIGTERM / SIGINT.

    uvicorn's notices a signal in its loop, between health checks of the workers (seconds
    under load), and kept its copy of the listening socket open until every worker had
    drained: meanwhile the port accepted connections into a backlog nobody would serve.
    Here the signal handler closes this process's copy and sends the workers SIGTERM,
    which close theirs and drain: the port refuses new connections right away."""

    def __init__(self, config: uvicorn.Config, sockets: list[Any]) -> None:
        super().__init__(config, sockets)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._stop)

    def _stop(self, sig: int, frame: Any) -> None:
        if self.should_exit.is_set():
            return
        self.should_exit.set()
        for sock in self.sockets:
            sock.close()
        for process in self.processes:
            if process.pid is not None and process.exitcode is None:
                with contextlib.suppress(OSError):
                    os.kill(process.pid, signal.SIGTERM)

    def keep_subprocess_alive(self) -> None:
        try:
            super().keep_subprocess_alive()
        except OSError:                          # a stop closed the sockets under a worker restart
            if not self.should_exit.is_set():
                raise

    def terminate_all(self) -> None:
        logger.info("stopping: the workers finish what they serve (server.shutdown_timeout_s: %gs)",
                    self.config.timeout_graceful_shutdown)
        for sock in self.sockets:
            sock.close()
        super().terminate_all()


_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int | None) -> None:
    """Have the kernel send this process SIGTERM (a drain) when its parent dies.

    Linux: prctl(PR_SET_PDEATHSIG), then a check that the parent did not die before it;
    elsewhere a thread compares getppid() with the parent's pid every second. SIGTERM,
    not SIGKILL: in-flight requests still finish within server.shutdown_timeout_s, and
    the listening socket is closed at once."""
    if parent_pid is None:
        return
    armed = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
            armed = libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if not armed:
        def watch() -> None:
            while os.getppid() == parent_pid:
                time.sleep(1.0)
            os.kill(os.getpid(), signal.SIGTERM)
        threading.Thread(target=watch, name="sluice-parent-watch", daemon=True).start()
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGTERM)


def uvicorn_config(app: Any, cfg: SluiceConfig, *, host: str, port: int, log_level: str = "info",
                   **options: Any) -> GatewayConfig:
    """The uvicorn Config `sluice serve` runs `app` with (tests start a `GatewayServer` on it)."""
    server = cfg.server
    limits = fit_open_file_limit(ConnectionLimits.from_config(cfg), server.max_upstream_connections)
    return GatewayConfig(app, limits=limits, host=host, port=port, loop="uvloop", http=GatewayHttpProtocol,
                         ws="none", lifespan="on", log_level=log_level, access_log=False,
                         # uvicorn's keep-alive timer is never armed (the sweep closes idle
                         # connections); set for anything else that reads it
                         timeout_keep_alive=server.keep_alive_timeout_s,
                         timeout_graceful_shutdown=server.shutdown_timeout_s, **options)


def run(app: Any, cfg: SluiceConfig, *, host: str, port: int, log_level: str = "info") -> int:
    """Serve `app` in this process until SIGTERM or Ctrl-C, drain, return 0 (3 when it
    could not start, as uvicorn)."""
    config = uvicorn_config(app, cfg, host=host, port=port, log_level=log_level)
    server = GatewayServer(config)
    sockets = listening_sockets(config, cfg)
    try:
        server.run(sockets=sockets)
    finally:
        for sock in sockets:
            sock.close()
    return 0 if server.started else STARTUP_FAILURE


def listening_sockets(config: uvicorn.Config, cfg: SluiceConfig) -> list[socket.socket]:
    """The main port's socket, and `server.ops_port`'s when set (the app tells the two
    apart by `scope["server"]`)."""
    sockets = [config.bind_socket()]
    if cfg.server.ops_port is not None:
        family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        ops = socket.socket(family, socket.SOCK_STREAM)
        ops.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            ops.bind((config.host, cfg.server.ops_port))
        except OSError as exc:
            ops.close()
            sockets[0].close()
            raise SystemExit(f"sluice: cannot listen on server.ops_port {cfg.server.ops_port}: {exc}") from None
        ops.set_inheritable(True)
        sockets.append(ops)
    return sockets


def run_workers(cfg: SluiceConfig, *, host: str, port: int, workers: int, log_level: str = "info") -> int:
    """Serve with `workers` processes sharing one listening socket until SIGTERM or Ctrl-C;
    each drains, then this returns 0."""
    config = uvicorn_config(None, cfg, host=host, port=port, log_level=log_level, workers=workers)
    config.hand_over(cfg, parent_pid=os.getpid())
    sockets = listening_sockets(config, cfg)
    try:
        _Supervisor(config, sockets=sockets).run()
    finally:
        for sock in sockets:
            sock.close()
    return 0
