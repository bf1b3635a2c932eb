"""The gateway's end of the collector socket: a bounded queue, one shipping thread, and
every request kept until the collector acknowledges it.

The event loop encodes `(row, trace)` (`frames.pack_entry`, ~1 µs) and appends it to a
deque (no lock, no wake-up: the shipper looks every `interval_s`). The shipper thread
sends what accumulated as numbered frames (one `sendmsg` each), answers `flush()`/
`report()` calls from other threads over the same socket (the collector handles a
connection's messages in order, so a flush covers every request submitted before it), and
every second mirrors the collector's own counters into this process's metrics.

Delivery (docs/telemetry.md, "Delivery"): every entry gets a sequence number in this
process, and a sent frame stays in `_unacked` until the collector acknowledges it. The
collector acknowledges a frame once none of its rows and spans is held any more, written
to ClickHouse or given up, and its acknowledgements carry running totals of both per
queue and reason, which this process adds to its metrics: the collector's own fate (a
SIGKILL) cannot lose a count. When the connection breaks the unacked frames are resent to
the next collector, flagged when another collector may have written them, and the
collector leaves out what ClickHouse holds already. So, while the gateway runs,

    rows written + rows dropped (sluice_telemetry_rows_*_total{queue="requests"}) == records

and the rows in `llm_requests` are the rows written, each once. Memory is bounded: at most
`queue_max` entries wait to be sent and `queue_max` sent ones wait for their
acknowledgement; while the second bound is reached nothing more is sent, and past the
first new requests are dropped and counted (`queue_full`). Serving never waits on any of
it.
"""

from __future__ import annotations

import logging
import os
import queue
import select
import socket
import threading
import time
from collections import deque
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from telemetry.collector import CollectorProcess
from telemetry.frames import RESENT, pack_entry, recv_frame, send_data, send_frame, unpack_entry
from telemetry.metrics import GatewayMetrics
from telemetry.sink import REQUESTS_QUEUE, SPANS_QUEUE
from telemetry.span_recorder import TraceFacts, span_count

log = logging.getLogger("sluice.telemetry")

_STATS_EVERY_S = 1.0
_RECONNECT_MAX_S = 60.0
_DROP_LOG_EVERY_S = 10.0
_HELLO_TIMEOUT_S = 30.0


class CollectorUnavailable(RuntimeError):
    pass


class _Frame:
    """A sent frame until it is acknowledged: its entries and the collectors it went to."""

    __slots__ = ("first", "packed", "sent_to")

    def __init__(self, first: int, packed: list[bytes], sent_to: set[str]) -> None:
        self.first = first
        self.packed = packed
        self.sent_to = sent_to

    @property
    def end(self) -> int:
        return self.first + len(self.packed)


class CollectorClient:
    def __init__(
        self, socket_path: Path, *, metrics: GatewayMetrics, queue_max: int,
        owner: CollectorProcess | None = None, interval_s: float = 0.05, max_batch: int = 1000,
        shared: bool = False, unacked_max: int | None = None,
    ) -> None:
        """`shared`: one of several workers on a collector their parent runs. Then the
        collector's own counters are not mirrored here but added once to the merged
        /metrics (`merged_metrics()`), to which this worker pushes its own every second.
        `unacked_max`: entries sent and not acknowledged yet (default `queue_max`)."""
        self.socket_path = Path(socket_path)
        self._metrics = metrics
        self._queue_max = queue_max
        self._unacked_max = max(1, unacked_max if unacked_max is not None else queue_max)
        self.owner = owner
        self._interval = interval_s
        self._max_batch = max_batch
        self.shared = shared
        self._worker_id = str(os.getpid())
        # This process's id on the collector and in `llm_requests.ingest_client`.
        self.client_id = f"{os.getpid():x}-{os.urandom(4).hex()}"
        self._pending: deque[bytes] = deque()      # pack_entry((row, trace)), not sent yet
        self._unacked: deque[_Frame] = deque()     # sent, not acknowledged, in order
        self._unacked_n = 0                        # entries in them
        self._sent_here = 0                        # of _unacked: sent on the current connection
        self._next_seq = 0
        self._instance: str | None = None          # the collector of the current connection
        self._ack_key: Any = None                  # whose running totals `_ack_seen` holds
        self._ack_seen: dict[str, dict] = {"written": {}, "dropped": {}}
        self._calls: queue.SimpleQueue[tuple[tuple, Future]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stopping = False
        self._closing_deadline = 0.0
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
        cannot start is logged: requests are served, their telemetry queued (then dropped,
        counted, past the bounds) while the shipper keeps trying."""
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
            except (OSError, ValueError, TypeError) as exc:
                if time.monotonic() > deadline:
                    log.error("telemetry: cannot reach the collector at %s (%s); requests are "
                              "queued and the connection retried", self.socket_path, exc)
                    break
                time.sleep(0.05)
        self._thread = threading.Thread(target=self._run, name="sluice-telemetry-shipper", daemon=True)
        self._thread.start()

    def flush(self, timeout_s: float = 5.0) -> bool:
        """True when everything submitted so far is acknowledged by the collector: written
        to ClickHouse or counted as dropped; False if not within `timeout_s`."""
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

    def audit(self, rows: list[tuple]) -> int:
        """Admin API audit rows, written by the collector now (blocking)."""
        return self._call(("audit", rows), 30.0)

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Ship what is queued and have the collector write it (within `timeout_s`), then
        stop. If this process started the collector it is stopped too, and its last
        acknowledgements (what it wrote or gave up while draining) are awaited until it
        exits. What is never acknowledged is counted as dropped (`shutdown`)."""
        deadline = time.monotonic() + timeout_s
        self.flush(timeout_s)
        self._closing_deadline = deadline + (5.0 if self.owner is not None else 0.0)
        self._stopping = True
        if self.owner is not None:
            self.owner.terminate()            # it drains, acknowledges, closes the connection
        self._wake.set()
        if self._thread is not None:
            self._thread.join(max(0.1, self._closing_deadline - time.monotonic()) + 1.0)
        left = [unpack_entry(p) for frame in self._unacked for p in frame.packed]
        left += [unpack_entry(p) for p in self._pending]
        if left:
            self._dropped(left, "shutdown")
        self._unacked.clear()
        self._unacked_n = 0
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
            if self._stopping:
                self._close()
                return
            try:
                self._ship()
                self._poll()
                while not self._calls.empty():
                    message, future = self._calls.get_nowait()
                    self._answer(message, future)
                if time.monotonic() >= self._next_stats:
                    self._next_stats = time.monotonic() + _STATS_EVERY_S
                    self._mirror_stats()
            except Exception:
                log.exception("telemetry shipper: unexpected error")

    def _close(self) -> None:
        """Stopping: send what is left and take acknowledgements until everything is
        acknowledged, the collector hangs up, or the deadline."""
        while not self._calls.empty():
            self._calls.get_nowait()[1].set_exception(CollectorUnavailable("telemetry is shutting down"))
        while time.monotonic() < self._closing_deadline and (self._pending or self._unacked):
            try:
                if self._sock is None:
                    return                          # no reconnecting while stopping
                self._ship()
                sock = self._sock
                if sock is None:
                    return
                ready, _, _ = select.select([sock], [], [], min(0.2, max(0.0, self._closing_deadline - time.monotonic())))
                if ready:
                    self._on_message(recv_frame(sock))
            except (OSError, ConnectionError) as exc:
                self._lost_connection(exc)
                return
            except Exception:
                log.exception("telemetry shipper: unexpected error while stopping")
                return

    def _ship(self) -> None:
        sock = self._socket()
        if sock is None:                   # kept (bounded) until the collector is back
            return
        try:
            while self._sent_here < len(self._unacked):        # resend after a reconnect
                frame = self._unacked[self._sent_here]
                flags = RESENT if frame.sent_to - {self._instance} else 0
                frame.sent_to.add(self._instance)
                send_data(sock, frame.packed, frame.first, flags)
                self._sent_here += 1
            while self._pending and self._unacked_n < self._unacked_max:
                n = min(len(self._pending), self._max_batch, self._unacked_max - self._unacked_n)
                frame = _Frame(self._next_seq, [self._pending.popleft() for _ in range(n)], {self._instance})
                self._next_seq += n
                self._unacked.append(frame)
                self._unacked_n += n
                send_data(sock, frame.packed, frame.first)
                self._sent_here += 1
        except OSError as exc:
            self._lost_connection(exc)     # the frame stays unacked: resent on the next connection

    def _poll(self) -> None:
        """Take the acknowledgements that arrived (never blocks on an idle socket)."""
        sock = self._sock
        try:
            while sock is not None and select.select([sock], [], [], 0)[0]:
                self._on_message(recv_frame(sock))
                sock = self._sock
        except (OSError, ConnectionError) as exc:
            self._lost_connection(exc)

    def _on_message(self, message: Any) -> None:
        if type(message) is tuple and message and message[0] == "ack":
            self._on_ack(message)
        else:
            log.warning("telemetry: unexpected message from the collector: %.100r", message)

    def _on_ack(self, message: tuple) -> None:
        """("ack", key, acked, written, dropped): every entry numbered below `acked` is
        resolved, and `written`/`dropped` are the running totals of the collector's ledger
        for this process (`key`) up to there: add what they grew by."""
        _, key, acked, written, dropped = message
        if key != self._ack_key:           # a new collector (or ledger): totals from 0
            self._ack_key = key
            self._ack_seen = {"written": {}, "dropped": {}}
        seen_written, seen_dropped = self._ack_seen["written"], self._ack_seen["dropped"]
        m = self._metrics
        for queue_name, n in written.items():
            if (delta := n - seen_written.get(queue_name, 0)) > 0:
                m.rows_written(queue_name, delta)
        for (queue_name, reason), n in dropped.items():
            if (delta := n - seen_dropped.get((queue_name, reason), 0)) > 0:
                m.rows_dropped(queue_name, delta, reason)
                if queue_name == REQUESTS_QUEUE:
                    self._log_drops(delta, reason)
        self._ack_seen = {"written": dict(written), "dropped": dict(dropped)}
        while self._unacked and self._unacked[0].first < acked:
            frame = self._unacked[0]
            if frame.end <= acked:
                self._unacked.popleft()
                self._unacked_n -= len(frame.packed)
                self._sent_here = max(0, self._sent_here - 1)
            else:                          # acknowledged part-way (not sent so, but cheap to allow)
                cut = acked - frame.first
                frame.packed = frame.packed[cut:]
                frame.first = acked
                self._unacked_n -= cut

    def _request(self, sock: socket.socket, message: tuple) -> Any:
        """Send a call and return its answer, taking the acknowledgements that come first."""
        send_frame(sock, message)
        while True:
            answer = recv_frame(sock)
            if type(answer) is tuple and answer and answer[0] == "ack":
                self._on_ack(answer)
                continue
            return answer

    def _answer(self, message: tuple, future: Future) -> None:
        sock = self._socket()
        if sock is None:
            future.set_exception(CollectorUnavailable(f"the telemetry collector at {self.socket_path} is down"))
            return
        try:
            if message[0] == "flush":
                self._ship()
                if self._sock is None:
                    raise ConnectionError("lost the collector while sending")
                status, done = self._request(sock, message)
                # written or counted: acknowledged, nothing left here
                future.set_result((status, bool(done) and not self._pending and not self._unacked))
                return
            future.set_result(self._request(sock, message))
        except (OSError, ConnectionError) as exc:
            self._lost_connection(exc)
            future.set_exception(CollectorUnavailable(f"lost the telemetry collector: {exc}"))

    def _mirror_stats(self) -> None:
        """The collector's depth, and its counters of what no gateway's acknowledgement
        carries (failed insert attempts; spans of its own)."""
        sock = self._socket()
        if sock is None:
            return
        message = ("stats", self._worker_id, self._metrics.render()[0]) if self.shared else ("stats",)
        try:
            status, stats = self._request(sock, message)
        except (OSError, ConnectionError) as exc:
            self._lost_connection(exc)
            return
        if status != "ok":
            return
        self._remote_depth = stats["depth"]
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

    # -- connection -------------------------------------------------------------------

    def _connect(self) -> socket.socket:
        """A connection on which the collector knows this process (hello answered)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
            sock.connect(str(self.socket_path))
            oldest = self._unacked[0].first if self._unacked else self._next_seq
            sock.settimeout(_HELLO_TIMEOUT_S)      # a collector that accepts but never answers
            send_frame(sock, ("hello", self.client_id, oldest))
            status, info = recv_frame(sock)
            sock.settimeout(None)
            if status != "ok":
                raise ConnectionError(f"the collector refused this gateway: {info}")
        except (OSError, ValueError, TypeError):
            sock.close()
            raise
        self._instance = info["instance"]
        self._sent_here = 0                 # every unacked frame goes again on this one
        if info.get("ack") is not None:    # what it acknowledged while we were not listening
            self._on_ack(info["ack"])
        return sock

    def _socket(self) -> socket.socket | None:
        """The connection, re-established (and the owned collector restarted) when lost;
        None while that is not possible yet (entries wait, bounded)."""
        if self._sock is not None:
            return self._sock
        if self._stopping:
            return None
        now = time.monotonic()
        if now < self._next_connect:
            return None
        try:
            if self.owner is not None and not self.owner.alive:
                log.error("telemetry: the collector process died; starting a new one")
                self.owner.restart()
            self._sock = self._connect()
            self._reconnect_wait = 0.1
            log.info("telemetry: connected to the collector at %s (%d requests to resend)",
                     self.socket_path, self._unacked_n)
        except Exception as exc:
            # Backing off up to a minute: a collector that keeps dying at start must not turn
            # into a process spawned every few seconds (each start imports pyarrow and chDB).
            self._next_connect = now + self._reconnect_wait
            self._reconnect_wait = min(self._reconnect_wait * 2, _RECONNECT_MAX_S)
            log.warning("telemetry: collector not reachable (%s); next try in %.1fs", exc,
                        self._reconnect_wait)
        return self._sock

    def _lost_connection(self, exc: BaseException) -> None:
        log.warning("telemetry: lost the collector connection (%s); %d requests kept to resend",
                    exc, self._unacked_n)
        if self._sock is not None:
            self._sock.close()
        self._sock = None

    # -- accounting -----------------------------------------------------------------------

    def _depth(self, queue_name: str):
        """Held for `queue_name`: requests queued or unacknowledged here (which includes
        what the collector holds of them); spans in the collector's writer."""
        def depth() -> int:
            if queue_name == REQUESTS_QUEUE:
                return len(self._pending) + self._unacked_n
            return 0 if self.shared else self._remote_depth.get(queue_name, 0)
        return depth

    def _dropped(self, entries: list[tuple[tuple, TraceFacts | None]], reason: str) -> None:
        spans = 0
        for _, trace in entries:
            if trace is not None:
                try:
                    spans += span_count(trace)
                except Exception:
                    spans += 1
        self._metrics.rows_dropped(REQUESTS_QUEUE, len(entries), reason)
        if spans:
            self._metrics.rows_dropped(SPANS_QUEUE, spans, reason)
        self._log_drops(len(entries), reason)

    def _log_drops(self, count: int, reason: str) -> None:
        self._unlogged_drops += count
        now = time.monotonic()
        if now - self._last_drop_log >= _DROP_LOG_EVERY_S:
            log.warning("telemetry: dropped %d requests' rows and spans (%s)", self._unlogged_drops, reason)
            self._unlogged_drops = 0
            self._last_drop_log = now


class CollectorCallError(RuntimeError):
    """The collector answered a call with ("error", text)."""


class CollectorCalls:
    """Blocking calls to a running collector on a connection of their own, for a process
    that only asks (the drift monitor reading the embedded chDB the gateway's collector
    owns). No hello: the collector keeps no ledger for it and sends it no
    acknowledgements, so every frame that comes back is the answer to the call just made.
    A connection of its own, not the gateway's shipper: a long query must not hold up the
    request rows. Thread-safe (one call at a time); after a timeout or a broken connection
    the next call reconnects (the late answer must not be read as the next one's)."""

    def __init__(self, socket_path: Path, *, timeout_s: float = 300.0, connect_timeout_s: float = 5.0) -> None:
        self.socket_path = Path(socket_path)
        self.timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def call(self, message: tuple, timeout_s: float | None = None) -> Any:
        """The value of the ("ok", value) answer; CollectorCallError on ("error", text),
        CollectorUnavailable when the collector cannot be reached or does not answer."""
        with self._lock:
            sock = self._connected()
            try:
                sock.settimeout(self.timeout_s if timeout_s is None else timeout_s)
                send_frame(sock, message)
                answer = recv_frame(sock)
                while type(answer) is tuple and answer and answer[0] == "ack":   # not for us: never expected
                    answer = recv_frame(sock)
            except (OSError, ConnectionError) as exc:
                self._drop()
                raise CollectorUnavailable(f"lost the telemetry collector at {self.socket_path}: {exc}") from None
        status, value = answer
        if status != "ok":
            raise CollectorCallError(str(value))
        return value

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _connected(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self._connect_timeout_s)
            try:
                sock.connect(str(self.socket_path))
            except OSError as exc:
                sock.close()
                raise CollectorUnavailable(f"no telemetry collector at {self.socket_path}: {exc}") from None
            self._sock = sock
        return self._sock

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
