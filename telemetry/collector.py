"""The telemetry collector: a process of its own that owns ClickHouse for the gateway.

Why a process: encoding rows and spans to Arrow, running the span processors and chDB's
insert work are CPU work under the GIL. In the gateway process they competed with the
event loop for the interpreter (the writer threads held the GIL about a third as long as
the loop ran), which is what tracing cost in throughput. Here they run beside the gateway
instead, and the gateway's share of tracing is building one tuple per request and
pickling batches of them (`telemetry.collector_client`). It also lets several gateway
workers share one embedded chDB, which allows one process per directory.

    gateway worker(s) ── CollectorClient ══ Unix socket (frames.py) ══► collector process
                                                                        └── TelemetrySink

Messages (tuples): ("data", [(row, trace), ...]) is never answered; ("flush", timeout_s),
("stats",), ("report", since, by) and, with `--workers`, ("stats", worker, metrics text) and
("metrics", worker, metrics text) (`telemetry.metrics_merge`) are answered with
("ok", value) or ("error", text).

`python -m telemetry.collector --socket PATH --data-dir DIR [--parent-pid PID]` reads the
`telemetry:` config as JSON on stdin (so a ClickHouse password never shows in `ps`), serves
until SIGTERM or until its parent dies, then flushes. SIGINT is ignored: Ctrl-C reaches the
whole process group, and the gateway still has rows to hand over while it shuts down.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import logging
import os
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa

from telemetry.config import TelemetryConfig
from telemetry.frames import recv_frame, send_frame
from telemetry.metrics_merge import merge_expositions, writer_exposition
from telemetry.priority import PriorityGuard, unread_bytes
from telemetry.sink import TelemetrySink

log = logging.getLogger("sluice.telemetry")

_MAX_UNIX_PATH = 100      # sun_path is 108 bytes on Linux, less elsewhere
_WORKER_METRICS_TTL_S = 10.0   # a worker that stopped pushing (it exited) drops out of /metrics


def socket_path_for(data_dir: Path) -> Path:
    """`<data dir>/telemetry.sock`, or a short path in the temp dir when that is too long."""
    path = Path(data_dir).resolve() / "telemetry.sock"
    if len(str(path)) <= _MAX_UNIX_PATH:
        return path
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"sluice-telemetry-{digest}.sock"


class WriterStats:
    """The sink's `WriterListener` in the collector: cumulative counts the gateways mirror
    into their own /metrics (`CollectorClient` applies the deltas)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.written: Counter[str] = Counter()
        self.dropped: Counter[tuple[str, str]] = Counter()
        self.failed: Counter[str] = Counter()

    def rows_written(self, queue: str, count: int) -> None:
        with self._lock:
            self.written[queue] += count

    def rows_dropped(self, queue: str, count: int, reason: str) -> None:
        with self._lock:
            self.dropped[queue, reason] += count

    def write_failed(self, queue: str) -> None:
        with self._lock:
            self.failed[queue] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"written": dict(self.written), "dropped": dict(self.dropped),
                    "failed": dict(self.failed)}


class Collector:
    """The collector's state: the sink and what it answers."""

    def __init__(self, sink: TelemetrySink, stats: WriterStats, *, arrow_pool: str = "") -> None:
        self.sink = sink
        self.stats = stats
        self.arrow_pool = arrow_pool             # what pyarrow allocates from (for `stats`)
        self.instance = f"{os.getpid()}-{time.time_ns()}"   # a restart resets the counters
        self.worker_metrics: dict[str, tuple[float, bytes]] = {}   # worker -> (when, exposition)

    def _stats(self) -> dict[str, Any]:
        depth = {w.name: w.depth for w in self.sink.writers}
        return {"instance": self.instance, "depth": depth, "arrow_pool": self.arrow_pool,
                **self.stats.snapshot()}

    def _merged_metrics(self) -> bytes:
        """Every live worker's metrics (pushed within the last 10 s) and the collector's own."""
        now = time.monotonic()
        for worker, (when, _) in list(self.worker_metrics.items()):
            if now - when > _WORKER_METRICS_TTL_S:
                del self.worker_metrics[worker]
        texts = [text for _, text in self.worker_metrics.values()]
        texts.append(writer_exposition(self._stats(), self.sink.config.queue_max))
        return merge_expositions(texts)

    def answer(self, message: tuple) -> tuple:
        kind = message[0]
        try:
            if kind == "flush":
                return "ok", self.sink.flush(float(message[1]))
            if kind == "stats":            # ("stats",) or ("stats", worker id, its /metrics text)
                if len(message) == 3:
                    self.worker_metrics[message[1]] = (time.monotonic(), message[2])
                return "ok", self._stats()
            if kind == "metrics":          # ("metrics", worker id, its /metrics text): all workers'
                self.worker_metrics[message[1]] = (time.monotonic(), message[2])
                return "ok", self._merged_metrics()
            if kind == "report":
                return "ok", self.sink.report(message[1], message[2])
            return "error", f"unknown message {kind!r}"
        except ValueError as exc:           # a bad report argument: the caller's to fix
            return "error", str(exc)
        except Exception as exc:
            log.exception("telemetry collector: %s failed", kind)
            return "error", f"{type(exc).__name__}: {exc}"


class _Connection(socketserver.BaseRequestHandler):
    """One gateway worker: data frames until it hangs up, with requests in between."""

    server: "_Server"

    def handle(self) -> None:
        collector = self.server.collector
        sock: socket.socket = self.request
        self.server.connections.add(sock)
        try:
            self._serve(collector, sock)
        finally:
            self.server.connections.discard(sock)

    def _serve(self, collector: Collector, sock: socket.socket) -> None:
        while True:
            try:
                message = recv_frame(sock)
            except (ConnectionError, OSError):
                return
            if message[0] == "data":
                try:
                    collector.sink.submit_many(message[1])
                except Exception:
                    log.exception("telemetry collector: could not take a batch of %d requests",
                                  len(message[1]))
                continue
            try:
                send_frame(sock, collector.answer(message))
            except OSError:
                return


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def __init__(self, path: Path, collector: Collector, connections: set[socket.socket]) -> None:
        self.collector = collector
        self.connections = connections         # open gateway connections (PriorityGuard reads them)
        path.unlink(missing_ok=True)            # a socket left by a process that died
        old_umask = os.umask(0o177)             # the socket is born 0600
        try:
            super().__init__(str(path), _Connection)
        finally:
            os.umask(old_umask)


def use_retaining_arrow_pool() -> str:
    """Have pyarrow allocate from jemalloc, which keeps freed memory for the next batch.

    pyarrow's default here, mimalloc, returns a batch's pages to the kernel within
    milliseconds and faults in fresh (huge) pages for the next one: in `perf` the kernel
    zeroing and first-touching them was ~4% of the collector's CPU (<1% with jemalloc),
    and zeroing 2 MB pages sweeps the caches the gateway shares. An explicit
    ARROW_DEFAULT_MEMORY_POOL is left alone. Returns the backend in use."""
    if not os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        try:
            pa.set_memory_pool(pa.jemalloc_memory_pool())
        except (AttributeError, NotImplementedError):      # a pyarrow built without it
            pass
    return pa.default_memory_pool().backend_name


def serve(cfg: TelemetryConfig, data_dir: Path, socket_path: Path, *, parent_pid: int | None,
          shutdown_timeout_s: float) -> None:
    connections: set[socket.socket] = set()
    guard = PriorityGuard(lambda: sum(unread_bytes(s) for s in list(connections)))
    # Before any other thread starts: the threads created from here on inherit the policy.
    if cfg.collector_priority == "idle" and guard.start():
        log.info("telemetry collector: running at idle CPU priority")
    arrow_pool = use_retaining_arrow_pool()
    stats = WriterStats()
    sink = TelemetrySink.from_config(cfg, data_dir, listener=stats, inline_spans=True)
    collector = Collector(sink, stats, arrow_pool=arrow_pool)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Listen before connecting: gateways connect while ClickHouse is still being opened
    # and migrated; what they send meanwhile waits in the writers' bounded queues.
    sink.start_writers()
    server = _Server(socket_path, collector, connections)
    threading.Thread(target=server.serve_forever, name="sluice-collector-accept", daemon=True).start()
    sink.connect()
    # Everything loaded so far (pyarrow, chDB, clickhouse-connect, the SDK) lives as long
    # as the process: keep it out of the collector's full collections, which otherwise
    # walked it while thousands of spans were built per second (spans_to_arrow measured
    # 23 -> 13 µs per request with the heap frozen).
    gc.collect()
    gc.freeze()
    log.info("telemetry collector ready on %s (ClickHouse %s, Arrow memory from %s)", socket_path,
             sink.connection.description, arrow_pool)
    while not stop.wait(1.0):
        if parent_pid is not None and os.getppid() != parent_pid:
            log.warning("telemetry collector: the gateway (pid %d) is gone; flushing and exiting", parent_pid)
            break
    guard.stop()
    server.shutdown()
    server.server_close()
    socket_path.unlink(missing_ok=True)
    sink.shutdown(shutdown_timeout_s)


class CollectorProcess:
    """The owner's handle: start the collector, see if it lives, stop it (flushing)."""

    def __init__(self, cfg: TelemetryConfig, data_dir: Path, *, shutdown_timeout_s: float = 10.0) -> None:
        self._cfg = cfg
        self._data_dir = Path(data_dir)
        self._shutdown_timeout_s = shutdown_timeout_s
        self.socket_path = socket_path_for(self._data_dir)
        self._process: subprocess.Popen | None = None
        self.restarts = 0

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout_s: float = 60.0) -> None:
        """Start it and wait until it accepts connections (blocking)."""
        self._data_dir.mkdir(parents=True, exist_ok=True)
        root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        command = [sys.executable, "-c", "from telemetry.collector import main; main()", "--socket", str(self.socket_path),
                   "--data-dir", str(self._data_dir), "--parent-pid", str(os.getpid()),
                   "--shutdown-timeout", str(self._shutdown_timeout_s)]
        self.socket_path.unlink(missing_ok=True)
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, env=env)
        assert self._process.stdin is not None
        self._process.stdin.write(self._cfg.model_dump_json().encode())
        self._process.stdin.close()
        deadline = time.monotonic() + timeout_s
        while not _accepts(self.socket_path):
            if self._process.poll() is not None:
                raise RuntimeError(f"the telemetry collector exited with {self._process.returncode} at start")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the telemetry collector did not listen on {self.socket_path} "
                                   f"within {timeout_s:g}s")
            time.sleep(0.02)

    def restart(self) -> None:
        self.stop(timeout_s=1.0)
        self.restarts += 1
        self.start()

    def stop(self, timeout_s: float | None = None) -> None:
        """SIGTERM, then wait for its flush (`shutdown_timeout_s` plus a margin), then kill."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait((self._shutdown_timeout_s if timeout_s is None else timeout_s) + 5.0)
        except subprocess.TimeoutExpired:
            log.error("telemetry collector did not stop in time; killing it")
            process.kill()
            process.wait()


def _accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
            return True
        except OSError:
            return False


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m telemetry.collector", description=__doc__)
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--parent-pid", type=int, default=None)
    parser.add_argument("--shutdown-timeout", type=float, default=10.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [collector] %(message)s")
    cfg = TelemetryConfig.model_validate_json(sys.stdin.buffer.read())
    serve(cfg, args.data_dir, args.socket, parent_pid=args.parent_pid,
          shutdown_timeout_s=args.shutdown_timeout)


if __name__ == "__main__":
    main()
