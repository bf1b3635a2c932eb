"""The gateway's end of the collector socket: a bounded queue and one shipping thread.

The event loop encodes `(row, trace)` (`frames.pack_entry`, ~1 µs) and appends it to a
deque (no lock, no wake-up: the shipper looks every `interval_s`). The shipper thread
sends what accumulated as frames (one `sendmsg` each), answers `flush()`/`report()` calls
from other threads over the same socket (the collector handles a connection's messages
in order, so a flush covers every request submitted before it), and every second mirrors
the collector's writer counters into this process's metrics.

When the collector is gone (crashed, restarting, not yet up), a batch whose send failed is
counted as dropped (`collector_unavailable`), the queue keeps filling up to `queue_max`
(then `queue_full` drops), and the shipper reconnects; if this process owns the collector
(`CollectorProcess`) it starts a new one. Serving never waits on any of it.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from collections import deque
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from telemetry.collector import CollectorProcess
from telemetry.frames import pack_entry, recv_frame, send_data, send_frame, unpack_entry
from telemetry.metrics import GatewayMetrics
from telemetry.sink import REQUESTS_QUEUE, SPANS_QUEUE
from telemetry.span_recorder import TraceFacts, span_count

log = logging.getLogger("sluice.telemetry")

_STATS_EVERY_S = 1.0
_RECONNECT_MAX_S = 60.0
_DROP_LOG_EVERY_S = 10.0


class CollectorUnavailable(RuntimeError):
    pass


class CollectorClient:
    def __init__(
        self, socket_path: Path, *, metrics: GatewayMetrics, queue_max: int,
        owner: CollectorProcess | None = None, interval_s: float = 0.05, max_batch: int = 1000,
        shared: bool = False,
    ) -> None:
        """`shared`: one of several workers on a collector their parent runs. Then the
        collector's counters are not mirrored here but added once to the merged /metrics
        (`merged_metrics()`), to which this worker pushes its own every second."""
        self.socket_path = Path(socket_path)
        self._metrics = metrics
        self._queue_max = queue_max
        self.owner = owner
        self._interval = interval_s
        self._max_batch = max_batch
        self.shared = shared
        self._worker_id = str(os.getpid())
        self._pending: deque[bytes | tuple] = deque()      # pack_entry((row, trace))
        self._calls: queue.SimpleQueue[tuple[tuple, Future]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._remote_depth: dict[str, int] = {}
        self._seen: dict[str, Any] = {}          # the collector's counters last mirrored
        self._next_stats = 0.0
        self._next_connect = 0.0
        self._reconnect_wait = 0.1
        self._unlogged_drops = 0
        self._last_drop_log = 0.0
        metrics.register_queue(REQUESTS_QUEUE, self._depth(REQUESTS_QUEUE), queue_max)
        metrics.register_queue(SPANS_QUEUE, self._depth(SPANS_QUEUE), queue_max)

    # -- request path (the event loop) ----------------------------------------------------

    def submit(self, row: tuple, trace: TraceFacts | None) -> None:
        """O(1), never blocks. Past `queue_max` queued requests the request is dropped and
        counted (its row and its spans)."""
        if len(self._pending) >= self._queue_max or self._stopping:
            self._dropped([(row, trace)], "queue_full" if not self._stopping else "shutdown")
            return
        self._pending.append(pack_entry((row, trace)))

    # -- lifecycle and calls (blocking: never on the event loop) --------------------------

    def start(self, connect_timeout_s: float = 10.0) -> None:
        """Start the owned collector (if any), connect, start shipping. A collector that
        cannot start is logged: requests are served, their telemetry queued then dropped
        (counted) while the shipper keeps trying."""
        if self.owner is not None:
            try:
                self.owner.start()
            except Exception as exc:
                log.error("telemetry: %s", exc)
                connect_timeout_s = 0.0
        deadline = time.monotonic() + connect_timeout_s
        while True:
            try:
                self._sock = self._connect()
                break
            except OSError as exc:
                if time.monotonic() > deadline:
                    log.error("telemetry: cannot reach the collector at %s (%s); requests are "
                              "queued and the connection retried", self.socket_path, exc)
                    break
                time.sleep(0.05)
        self._thread = threading.Thread(target=self._run, name="sluice-telemetry-shipper", daemon=True)
        self._thread.start()

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Everything submitted so far is written to ClickHouse (True) or not in time."""
        try:
            return bool(self._call(("flush", timeout_s), timeout_s + 1.0))
        except CollectorUnavailable:
            return False

    def merged_metrics(self) -> bytes:
        """All workers' /metrics merged by the collector, this worker's as of now."""
        return self._call(("metrics", self._worker_id, self._metrics.render()[0]), 5.0)

    def report(self, since: str, by: str) -> str:
        """The `sluice report` table, from the collector's ClickHouse connection."""
        return self._call(("report", since, by), 30.0)

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Ship what is queued and have the collector write it (within `timeout_s`), then
        stop the shipper and, if this process started the collector, the collector."""
        deadline = time.monotonic() + timeout_s
        self.flush(timeout_s)
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(max(0.1, deadline - time.monotonic()))
        if self._pending:
            self._dropped([unpack_entry(p) for p in self._pending], "shutdown")
            self._pending.clear()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self.owner is not None:
            self.owner.stop(max(0.0, deadline - time.monotonic()))

    def _call(self, message: tuple, timeout_s: float) -> Any:
        if self._thread is None or not self._thread.is_alive():
            raise CollectorUnavailable("telemetry is not running")
        future: Future = Future()
        self._calls.put((message, future))
        self._wake.set()
        try:
            status, value = future.result(timeout_s)
        except TimeoutError:
            raise CollectorUnavailable("the telemetry collector did not answer in time") from None
        if status != "ok":
            raise ValueError(value)
        return value

    # -- the shipper thread -------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            stopping = self._stopping
            try:
                self._ship()
                while not self._calls.empty():
                    message, future = self._calls.get_nowait()
                    self._answer(message, future)
                if time.monotonic() >= self._next_stats:
                    self._next_stats = time.monotonic() + _STATS_EVERY_S
                    self._mirror_stats()
            except Exception:
                log.exception("telemetry shipper: unexpected error")
            if stopping:
                return

    def _ship(self) -> None:
        while self._pending:
            n = min(len(self._pending), self._max_batch)
            batch = [self._pending.popleft() for _ in range(n)]
            sock = self._socket()
            if sock is None:              # keep them queued (bounded by submit) until it is back
                self._pending.extendleft(reversed(batch))
                return
            try:
                send_data(sock, batch)
            except OSError as exc:
                self._lost_connection(exc)
                self._dropped([unpack_entry(p) for p in batch], "collector_unavailable")

    def _answer(self, message: tuple, future: Future) -> None:
        sock = self._socket()
        if sock is None:
            future.set_exception(CollectorUnavailable(f"the telemetry collector at {self.socket_path} is down"))
            return
        try:
            send_frame(sock, message)
            future.set_result(recv_frame(sock))
        except OSError as exc:
            self._lost_connection(exc)
            future.set_exception(CollectorUnavailable(f"lost the telemetry collector: {exc}"))

    def _mirror_stats(self) -> None:
        sock = self._socket()
        if sock is None:
            return
        message = ("stats", self._worker_id, self._metrics.render()[0]) if self.shared else ("stats",)
        try:
            send_frame(sock, message)
            status, stats = recv_frame(sock)
        except OSError as exc:
            self._lost_connection(exc)
            return
        if status != "ok":
            return
        if self.shared:          # the collector's counters appear once, in the merged /metrics
            return
        if stats["instance"] != self._seen.get("instance"):      # a new collector counts from 0
            self._seen = {"instance": stats["instance"], "written": {}, "dropped": {}, "failed": {}}
        m = self._metrics
        for queue_name, n in stats["written"].items():
            if (delta := n - self._seen["written"].get(queue_name, 0)) > 0:
                m.rows_written(queue_name, delta)
        for (queue_name, reason), n in stats["dropped"].items():
            if (delta := n - self._seen["dropped"].get((queue_name, reason), 0)) > 0:
                m.rows_dropped(queue_name, delta, reason)
        for queue_name, n in stats["failed"].items():
            for _ in range(n - self._seen["failed"].get(queue_name, 0)):
                m.write_failed(queue_name)
        self._seen.update(written=stats["written"], dropped=stats["dropped"], failed=stats["failed"])
        self._remote_depth = stats["depth"]

    # -- connection -------------------------------------------------------------------

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
            sock.connect(str(self.socket_path))
        except OSError:
            sock.close()
            raise
        return sock

    def _socket(self) -> socket.socket | None:
        """The connection, re-established (and the owned collector restarted) when lost;
        None while that is not possible yet (callers count their batch as dropped)."""
        if self._sock is not None:
            return self._sock
        now = time.monotonic()
        if now < self._next_connect:
            return None
        try:
            if self.owner is not None and not self.owner.alive and not self._stopping:
                log.error("telemetry: the collector process died; starting a new one")
                self.owner.restart()
            self._sock = self._connect()
            self._reconnect_wait = 0.1
            log.info("telemetry: connected to the collector at %s", self.socket_path)
        except Exception as exc:
            # Backing off up to a minute: a collector that keeps dying at start must not turn
            # into a process spawned every few seconds (each start imports pyarrow and chDB).
            self._next_connect = now + self._reconnect_wait
            self._reconnect_wait = min(self._reconnect_wait * 2, _RECONNECT_MAX_S)
            log.warning("telemetry: collector not reachable (%s); next try in %.1fs", exc,
                        self._reconnect_wait)
        return self._sock

    def _lost_connection(self, exc: BaseException) -> None:
        log.warning("telemetry: lost the collector connection (%s); reconnecting", exc)
        if self._sock is not None:
            self._sock.close()
        self._sock = None

    # -- accounting -----------------------------------------------------------------------

    def _depth(self, queue_name: str):
        """Rows held for `queue_name`: queued here (requests) plus in the collector's writer."""
        def depth() -> int:
            local = len(self._pending) if queue_name == REQUESTS_QUEUE else 0
            if self.shared:          # the collector adds its own depth to the merged view
                return local
            return local + self._remote_depth.get(queue_name, 0)
        return depth

    def _dropped(self, entries: list[tuple[tuple, TraceFacts | None]], reason: str) -> None:
        spans = sum(span_count(trace) for _, trace in entries if trace is not None)
        self._metrics.rows_dropped(REQUESTS_QUEUE, len(entries), reason)
        if spans:
            self._metrics.rows_dropped(SPANS_QUEUE, spans, reason)
        self._unlogged_drops += len(entries)
        now = time.monotonic()
        if now - self._last_drop_log >= _DROP_LOG_EVERY_S:
            log.warning("telemetry: dropped %d requests' rows and spans (%s)", self._unlogged_drops, reason)
            self._unlogged_drops = 0
            self._last_drop_log = now
