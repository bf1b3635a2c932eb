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

Messages (tuples): a gateway first says ("hello", client id, oldest unacknowledged
sequence number), answered ("ok", {"instance", "ack"}). Data frames ("data", [(row, trace),
...], first_seq, flags: `frames.send_data`) are never answered; ("flush", timeout_s),
("stats",), ("report", since, by) and, with `--workers`, ("stats", worker, metrics text)
and ("metrics", worker, metrics text) (`telemetry.metrics_merge`) are answered with
("ok", value) or ("error", text). So are ("query" | "command" | "insert", args, kwargs):
the drift monitor's reads and writes of the embedded chDB while this process owns it
(`monitoring/store.py`, through `collector_client.CollectorCalls`), run on the writers'
ClickHouse client with the clickhouse-connect method of that name; a query answers
(column names, rows), Array(Float32) values as array('f') (compact; numpy takes them as
is). Anyone who can connect may run SQL: the socket is 0600, its owner could open the chDB
directory itself.

Acknowledgements: the collector keeps a `ClientLedger` per gateway process and a `Ticket`
per frame, on which the writers count what became of its rows and spans. Once every
ticket up to a frame is done (nothing of them held: written, or given up and counted) the
collector sends ("ack", ledger key, acked, written totals, dropped totals): everything
numbered below `acked` is resolved, and the totals are the ledger's running counts per
queue (and reason). Acks go out on the gateway's connection after each message from it
(frames every 50 ms under load, stats every second when idle), before the answer to a
flush, and once more when the collector stops. The gateway keeps what is not acknowledged
and resends it to a restarted collector (flag RESENT when another collector had it), so
a collector that dies loses nothing and counts nothing twice (docs/telemetry.md,
"Delivery").

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
from array import array
from collections import Counter, deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from telemetry.batch_writer import Ticket
from telemetry.config import TelemetryConfig
from telemetry.frames import RESENT, recv_frame, send_frame
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


_LEDGERS_MAX = 1024        # gateway processes remembered (one per worker lifetime)


class ClientLedger:
    """One gateway process as this collector knows it: the next sequence number it
    expects, a ticket per frame received and not yet acknowledged (in order), and the
    running totals of what it acknowledged (`key` names them: a new ledger counts from 0).
    Kept across reconnections, so a frame resent to the same collector is recognised."""

    def __init__(self, client: str, base: int, key: str) -> None:
        self.client = client
        self.key = key
        self.received = base
        self.acked = base
        self.frames: deque[tuple[int, Ticket]] = deque()     # (end seq, ticket)
        self.written: Counter[str] = Counter()
        self.dropped: Counter[tuple[str, str]] = Counter()
        self.last_sent: tuple | None = None
        self.lock = threading.Lock()
        self.sock: socket.socket | None = None
        self.send_lock = threading.Lock()
        self.touched = time.monotonic()

    def accept(self, first_seq: int, count: int, flags: int) -> tuple[int, Ticket | None]:
        """A data frame arrived: how many of its leading entries this collector has already
        (resent on a new connection), and the ticket for the rest (None: nothing new)."""
        with self.lock:
            end = first_seq + count
            if end <= self.received:
                return count, None
            skip = max(0, self.received - first_seq)
            self.received = end
            ticket = Ticket(suspect=bool(flags & RESENT), key=end)
            self.frames.append((end, ticket))
            return skip, ticket

    def progress(self) -> tuple | None:
        """The acknowledgement to send, or None when nothing changed since the last one."""
        with self.lock:
            while self.frames and self.frames[0][1].done:
                end, ticket = self.frames.popleft()
                self.written.update(ticket.written)
                self.dropped.update(ticket.dropped)
                self.acked = end
            if not self.frames:
                self.acked = max(self.acked, self.received)
            ack = ("ack", self.key, self.acked, dict(self.written), dict(self.dropped))
            if ack == self.last_sent:
                return None
            self.last_sent = ack
            return ack

    def current(self) -> tuple:
        with self.lock:
            self.last_sent = ("ack", self.key, self.acked, dict(self.written), dict(self.dropped))
            return self.last_sent


# clickhouse-connect keyword arguments a trace call may pass, per method (plain values only).
TRACE_CALL_KWARGS: dict[str, frozenset[str]] = {
    "query": frozenset({"parameters", "settings", "use_none", "column_oriented"}),
    "command": frozenset({"parameters", "settings", "data"}),
    "insert": frozenset({"column_names", "database", "settings", "column_oriented", "column_type_names"}),
}


class Collector:
    """The collector's state: the sink, the gateways' ledgers, and what it answers."""

    def __init__(self, sink: TelemetrySink, stats: WriterStats, *, arrow_pool: str = "") -> None:
        self.sink = sink
        self.stats = stats
        self.arrow_pool = arrow_pool             # what pyarrow allocates from (for `stats`)
        self.instance = f"{os.getpid()}-{time.time_ns()}"   # a restart resets the counters
        self.worker_metrics: dict[str, tuple[float, bytes]] = {}   # worker -> (when, exposition)
        self.ledgers: dict[str, ClientLedger] = {}
        self._ledgers_lock = threading.Lock()
        self._epoch = 0

    def hello(self, client: str, oldest: int, sock: socket.socket | None) -> tuple[ClientLedger, tuple]:
        """A gateway (re)connected: its ledger (new, or the one kept since it last spoke
        to this collector) and the answer, with the acknowledgement it may have missed."""
        with self._ledgers_lock:
            ledger = self.ledgers.get(client)
            if ledger is None:
                if len(self.ledgers) >= _LEDGERS_MAX:
                    idle = [c for c, led in self.ledgers.items() if not led.frames]
                    for c in sorted(idle, key=lambda c: self.ledgers[c].touched)[:len(self.ledgers) // 2]:
                        del self.ledgers[c]
                self._epoch += 1
                ledger = self.ledgers[client] = ClientLedger(client, int(oldest), f"{self.instance}/{self._epoch}")
            ledger.sock = sock
            ledger.touched = time.monotonic()
        return ledger, ("ok", {"instance": self.instance, "ack": ledger.current()})

    def take(self, ledger: ClientLedger, entries: list, first_seq: int, flags: int) -> None:
        """A data frame from `ledger`'s gateway: to the writers, on a ticket."""
        skip, ticket = ledger.accept(first_seq, len(entries), flags)
        if ticket is None:
            return
        try:
            self.sink.submit_many(entries[skip:] if skip else entries, ticket,
                                  client=ledger.client, first_seq=first_seq + skip)
        except Exception:
            log.exception("telemetry collector: could not take a batch of %d requests", len(entries) - skip)
        finally:
            ticket.release()

    def acknowledge(self, ledger: ClientLedger, sock: socket.socket) -> None:
        """Send `ledger`'s acknowledgement on `sock` if it moved (OSError: connection gone)."""
        ack = ledger.progress()
        if ack is not None:
            with ledger.send_lock:
                send_frame(sock, ack)

    def final_acks(self) -> None:
        """Stopping: every gateway still connected gets its last acknowledgement."""
        for ledger in list(self.ledgers.values()):
            sock = ledger.sock
            if sock is None:
                continue
            try:
                self.acknowledge(ledger, sock)
            except OSError:
                pass

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
            if kind == "audit":             # ("audit", rows): admin API audit rows (telemetry/audit.py)
                return "ok", self.sink.audit(message[1])
            if kind in TRACE_CALL_KWARGS:   # (kind, args, kwargs): the monitor's SQL
                return self._trace_call(kind, tuple(message[1]), dict(message[2]))
            return "error", f"unknown message {kind!r}"
        except ValueError as exc:           # a bad report argument: the caller's to fix
            return "error", str(exc)
        except Exception as exc:
            log.exception("telemetry collector: %s failed", kind)
            return "error", f"{type(exc).__name__}: {exc}"


    def _trace_call(self, kind: str, args: tuple, kwargs: dict[str, Any]) -> tuple:
        """One clickhouse-connect call on the writers' client. A failing statement is the
        caller's to report (the monitor logs it): answered, not logged here."""
        unknown = set(kwargs) - TRACE_CALL_KWARGS[kind]
        if unknown:
            return "error", f"TypeError: {kind}() got unsupported arguments {sorted(unknown)}"
        try:
            client = self.sink.connection.get()
            if kind == "query":
                result = client.query(*args, **kwargs)
                rows = result.result_rows
                floats = [i for i, t in enumerate(result.column_types) if t.name == "Array(Float32)"]
                if floats and rows:            # embeddings: 4 bytes a value in the answer, not ~9
                    rows = [_float32_arrays(row, floats) for row in rows]
                return "ok", (list(result.column_names), rows)
            if kind == "command":
                return "ok", client.command(*args, **kwargs)
            return "ok", client.insert(*args, **kwargs)
        except Exception as exc:
            return "error", f"{type(exc).__name__}: {exc}"


def _float32_arrays(row: Sequence[Any], columns: list[int]) -> tuple:
    """`row` with its Array(Float32) values as array('f'): a sampled prompt embedding pickles
    to 1.6 KB instead of 3.5 KB as a list of floats, which keeps a run's embedding sample
    (tens of thousands of vectors) well inside one frame (frames.MAX_FRAME)."""
    values = list(row)
    for i in columns:
        values[i] = array("f", values[i])
    return tuple(values)


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
        ledger: ClientLedger | None = None
        send_lock = threading.Lock()
        try:
            while True:
                try:
                    message = recv_frame(sock)
                except (ConnectionError, OSError):
                    return
                kind = message[0]
                if kind == "data":
                    if ledger is None:           # no hello: nobody to acknowledge to
                        try:
                            collector.sink.submit_many(message[1])
                        except Exception:
                            log.exception("telemetry collector: could not take a batch of %d requests",
                                          len(message[1]))
                        continue
                    collector.take(ledger, message[1], message[2], message[3])
                    answer = None
                elif kind == "hello":
                    if ledger is not None:
                        ledger.sock = None
                    ledger, answer = collector.hello(str(message[1]), int(message[2]), sock)
                    ledger.send_lock = send_lock
                else:
                    answer = collector.answer(message)
                try:
                    if ledger is not None:
                        collector.acknowledge(ledger, sock)      # acks before an answer (flush)
                    if answer is not None:
                        with send_lock:
                            send_frame(sock, answer)
                except OSError:
                    return
        finally:
            if ledger is not None and ledger.sock is sock:
                ledger.sock = None


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
    # Connected gateways may still send while the writers drain: what comes too late is
    # counted on its ticket ("shutdown"), and the last acknowledgements tell them all.
    sink.shutdown(shutdown_timeout_s)
    collector.final_acks()
    for sock in list(connections):
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


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

    def terminate(self) -> None:
        """SIGTERM without waiting: it flushes, acknowledges and exits (`stop()` waits)."""
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()

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
