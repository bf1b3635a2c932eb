"""A bounded queue drained into one ClickHouse table by one worker thread.

The request path only calls `put()`: an append under a lock, never I/O, never a wait.
An item is one row (a request record) or several (a block of spans already in Arrow
form); the bounds and counts are in rows.
The worker wakes when a batch is full or `flush_interval_s` has passed, has a
`TableCodec` encode the items (outside the lock) and insert them in one statement.
While ClickHouse is unreachable it retries the same batch with capped exponential
backoff and keeps accepting items up to `queue_max` (the batch in flight included); past
that, new items are dropped, counted and logged (at most every 10 s). A batch the server
rejects (not a connection problem) is retried a few times and then dropped and counted,
so one bad row cannot wedge the queue.
`shutdown()` drains what it can within its timeout; what is left is counted as dropped.

An item may carry a `Ticket` (the collector: one per frame a gateway sent). Its rows are
then not reported to the listener but on the ticket, written or dropped by reason, and the
ticket knows when none of them is held any more: that is when the collector acknowledges
the frame to the gateway, which counts them (`telemetry.collector`). Items of a ticket
marked `suspect` (resent after a collector died) go through the codec's `dedupe()` before
their first insert, so what the dead collector wrote already is not written twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import OperationalError

from telemetry.clickhouse import ClickHouseConnection

log = logging.getLogger("sluice.telemetry")

T = TypeVar("T")

_REJECTED_BATCH_TRIES = 3      # non-transient failures before a batch is given up
_DROP_LOG_EVERY_S = 10.0


class WriterListener(Protocol):
    """What a writer reports (GatewayMetrics implements it)."""

    def rows_written(self, queue: str, count: int) -> None: ...
    def rows_dropped(self, queue: str, count: int, reason: str) -> None: ...
    def write_failed(self, queue: str) -> None: ...


_TICKETS = threading.Lock()     # guards every Ticket's counters (taken briefly, per batch)


class Ticket:
    """The fate of the rows of one unit of work handed to one or more writers.

    `pending` counts what is still held: one per accepted writer item, plus one the
    producer keeps until it has handed everything over (`release()`), so a ticket is not
    `done` while items may still be added. `written[queue]` and `dropped[queue, reason]`
    count rows."""

    __slots__ = ("pending", "written", "dropped", "suspect", "key")

    def __init__(self, *, suspect: bool = False, key: Any = None) -> None:
        self.pending = 1
        self.written: dict[str, int] = {}
        self.dropped: dict[tuple[str, str], int] = {}
        self.suspect = suspect
        self.key = key

    @property
    def done(self) -> bool:
        return self.pending == 0

    def hold(self) -> None:
        with _TICKETS:
            self.pending += 1

    def release(self) -> None:
        with _TICKETS:
            self.pending -= 1

    def count_dropped(self, queue: str, rows: int, reason: str) -> None:
        if rows:
            with _TICKETS:
                self.dropped[queue, reason] = self.dropped.get((queue, reason), 0) + rows

    def settle(self, queue: str, written: int, dropped: int = 0, reason: str = "") -> None:
        """One held item is over: `written` of its rows are in ClickHouse, `dropped` not."""
        with _TICKETS:
            if written:
                self.written[queue] = self.written.get(queue, 0) + written
            if dropped:
                self.dropped[queue, reason] = self.dropped.get((queue, reason), 0) + dropped
            self.pending -= 1


class _NullListener:
    def rows_written(self, queue: str, count: int) -> None: ...
    def rows_dropped(self, queue: str, count: int, reason: str) -> None: ...
    def write_failed(self, queue: str) -> None: ...


def _is_transient(exc: BaseException) -> bool:
    """Connection-level failures: retry forever (within the queue bound)."""
    return isinstance(exc, (OperationalError, OSError, TimeoutError))


class TableCodec(Protocol[T]):
    """How items become one INSERT: `encode` builds a batch (raising on bad items),
    `insert` sends it. Encoding is separate so a failed insert retries the same batch."""

    table: str

    def encode(self, items: list[T]) -> Any: ...
    def insert(self, client: Client, database: str, batch: Any) -> None: ...
    # Optional: dedupe(client, database, batch, ranges) -> (batch, removed per range), for
    # the rows at (offset, length) `ranges` that ClickHouse may hold already.


class BatchWriter(Generic[T]):
    def __init__(
        self,
        *,
        name: str,
        codec: TableCodec[T],
        connection: ClickHouseConnection,
        batch_size: int = 500,
        flush_interval_s: float = 1.0,
        queue_max: int = 20_000,
        retry_backoff_s: float = 30.0,
        retry_initial_s: float = 0.2,
        listener: WriterListener | None = None,
    ) -> None:
        self.name = name
        self._codec = codec
        self._table = codec.table
        self._conn = connection
        self._batch_size = batch_size
        self._interval = flush_interval_s
        self._queue_max = queue_max
        self._backoff_max = retry_backoff_s
        self._backoff_initial = min(retry_initial_s, retry_backoff_s)
        self._listener: WriterListener = listener or _NullListener()

        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[tuple[T, int, Ticket | None]] = deque()   # (item, rows in it, ticket)
        self._queued = 0                           # rows in the queue
        self._in_flight = 0                        # rows taken by the worker, not yet done
        self._accepted = 0                         # rows ever accepted by put()
        self._done = 0                             # accepted rows written or given up
        self._stopping = False
        self._stop_deadline = 0.0
        self._flush_requested = False
        self._thread: threading.Thread | None = None
        # The batch in flight: [ticket, rows, rows found already written] per item, in row
        # order, and whether its suspect rows were checked against ClickHouse yet.
        self._runs: list[list] = []
        self._deduped = True
        self._recheck_all = False     # an insert failed in a way that may have written it

        self.written = 0
        self.dropped = 0
        self._unlogged_drops = 0
        self._last_drop_log = 0.0

    # -- producers --------------------------------------------------------------------

    def put(self, item: T, rows: int = 1, ticket: Ticket | None = None, *,
            head: Callable[[T, int], T] | None = None) -> bool:
        """Enqueue one item of `rows` rows; O(1), never blocks on I/O. False when dropped
        (all of it: the queue never holds more than `queue_max` rows), unless `head(item, k)`
        can cut it to the first k rows: then what fits is queued and the rest dropped."""
        with self._cond:
            if self._stopping:
                self._count_drop_locked(rows, "shutdown", ticket)
                return False
            room = self._queue_max - self._queued - self._in_flight
            if rows > room:
                if head is None or room <= 0:
                    self._count_drop_locked(rows, "queue_full", ticket)
                    return False
                self._count_drop_locked(rows - room, "queue_full", ticket)
                item, rows = head(item, room), room
            self._queue.append((item, rows, ticket))
            if ticket is not None:
                ticket.hold()
            self._queued += rows
            self._accepted += rows
            if self._queued >= self._batch_size:
                self._cond.notify()
            return True

    def put_many(self, items: list[T]) -> int:
        """`put()` for single-row items under one lock; returns how many were accepted
        (the rest, past `queue_max`, are dropped and counted)."""
        with self._cond:
            if self._stopping:
                if items:
                    self._count_drop_locked(len(items), "shutdown")
                return 0
            room = max(0, self._queue_max - self._queued - self._in_flight)
            taken = items if len(items) <= room else items[:room]
            if len(taken) < len(items):
                self._count_drop_locked(len(items) - len(taken), "queue_full")
            self._queue.extend((item, 1, None) for item in taken)
            self._queued += len(taken)
            self._accepted += len(taken)
            if self._queued >= self._batch_size:
                self._cond.notify()
            return len(taken)

    @property
    def free_rows(self) -> int:
        """Rows that would be accepted now (a hint: other threads may take them first)."""
        return max(0, self._queue_max - self._queued - self._in_flight)

    def count_dropped(self, rows: int, reason: str, ticket: Ticket | None = None) -> None:
        """Account rows a producer dropped before they reached the queue."""
        if rows > 0:
            with self._cond:
                self._count_drop_locked(rows, reason, ticket)

    @property
    def depth(self) -> int:
        """Rows held in memory (queued plus the batch in flight)."""
        return self._queued + self._in_flight

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._run, name=f"sluice-telemetry-{self.name}", daemon=True
        )
        self._thread.start()

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until everything accepted so far is written (or given up). Blocking."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            target = self._accepted
            # Only queued rows need the worker woken early; a batch in flight finishes anyway.
            self._flush_requested = bool(self._queue)
            self._cond.notify_all()
            while self._done < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._thread is None or not self._thread.is_alive():
                    return False
                self._cond.wait(remaining)
            return True

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop accepting and let the worker drain until `timeout_s` from now; no wait.
        (Lets an owner stop several writers first and then wait for all of them.)"""
        with self._cond:
            if not self._stopping:
                self._stopping = True
                self._stop_deadline = time.monotonic() + timeout_s
                self._cond.notify_all()

    def shutdown(self, timeout_s: float = 5.0) -> bool:
        """Stop accepting, drain within `timeout_s`, stop the worker. True if all written."""
        self.stop(timeout_s)
        if self._thread is not None:
            self._thread.join(max(0.0, self._stop_deadline - time.monotonic()) + 1.0)
        with self._cond:
            left = self._queued + self._in_flight
            if left and (self._thread is None or not self._thread.is_alive()):
                # Never started, or gave up at the deadline: account for what is lost.
                if self._in_flight:
                    self._finish_batch_locked(self._in_flight, dropped=True, reason="shutdown")
                for _, rows, ticket in self._queue:
                    self._done += rows
                    self._count_drop_locked(rows, "shutdown", ticket, settle=True)
                self._queue.clear()
                self._queued = self._in_flight = 0
            return left == 0

    # -- worker ---------------------------------------------------------------------

    def _run(self) -> None:
        backoff = self._backoff_initial
        rejected_tries = 0
        next_flush = time.monotonic() + self._interval
        batch: Any = None                      # the encoded batch being written
        count = 0                              # items in it
        while True:
            if batch is None:
                with self._cond:
                    while not self._ready_locked(next_flush):
                        now = time.monotonic()
                        if now >= next_flush:      # idle: the clock starts again
                            next_flush = now + self._interval
                        self._cond.wait(next_flush - now)
                    if self._stopping and not self._queue:
                        self._cond.notify_all()
                        return
                    taken = self._take_locked()
                    self._flush_requested = self._flush_requested and bool(self._queue)
                batch, count = self._encode_batch(taken)   # outside the lock: put() never waits
                del taken                 # the items are encoded: do not keep them alive
                if batch is None:
                    continue
                self._deduped = getattr(self._codec, "dedupe", None) is None or not any(
                    run[0] is not None and run[0].suspect for run in self._runs)
                self._recheck_all = False
            error, transient, batch = self._write(batch, count)
            next_flush = time.monotonic() + self._interval
            with self._cond:
                if error is None:
                    self._finish_batch_locked(count, dropped=False)
                    batch, backoff, rejected_tries = None, self._backoff_initial, 0
                    continue
                if not transient:
                    rejected_tries += 1
                    if rejected_tries >= _REJECTED_BATCH_TRIES:
                        log.error("telemetry: %s rejected a batch of %d rows %d times, dropping "
                                  "it: %s", self._table, count, rejected_tries, error)
                        self._finish_batch_locked(count, dropped=True, reason="rejected")
                        batch, rejected_tries = None, 0
                        continue
                wait = backoff
                backoff = min(backoff * 2, self._backoff_max)
                if self._stopping:
                    remaining = self._stop_deadline - time.monotonic()
                    if remaining <= 0:
                        return    # shutdown() counts what is left as dropped
                    wait = min(wait, remaining)
                # Sleep out the whole backoff: put() notifies on every item once the queue is
                # past a batch, and waking on those turned an outage into a reconnect loop
                # (each failed chDB open costs milliseconds of CPU) that starved the gateway.
                retry_at = time.monotonic() + wait
                stopping = self._stopping
                while (now := time.monotonic()) < retry_at and self._stopping == stopping:
                    self._cond.wait(retry_at - now)

    def _ready_locked(self, next_flush: float) -> bool:
        if self._stopping or self._flush_requested or self._queued >= self._batch_size:
            return True
        return bool(self._queue) and time.monotonic() >= next_flush

    def _take_locked(self) -> list[tuple[T, int, Ticket | None]]:
        """Items from the head of the queue up to `batch_size` rows (at least one item)."""
        taken: list[tuple[T, int, Ticket | None]] = []
        rows = 0
        while self._queue and (not taken or rows + self._queue[0][1] <= self._batch_size):
            entry = self._queue.popleft()
            taken.append(entry)
            rows += entry[1]
        self._queued -= rows
        self._in_flight = rows
        self._runs = [[ticket, n, 0] for _, n, ticket in taken]
        return taken

    def _encode_batch(self, taken: list[tuple[T, int, Ticket | None]]) -> tuple[Any, int]:
        """(batch, rows in it), or (None, 0) when nothing is left to write.

        A batch that fails to encode is retried item by item to find the bad ones, which
        are dropped and counted ("invalid"); the rest are written. (The request codec
        cannot fail on a value; this is the net under a bug.)
        """
        try:
            return self._codec.encode([item for item, _, _ in taken]), sum(n for _, n, _ in taken)
        except Exception:
            log.exception("telemetry: cannot encode a batch for %s; checking each item",
                          self._table)
        good: list[tuple[T, int, Ticket | None]] = []
        bad: list[tuple[T, int, Ticket | None]] = []
        for entry in taken:
            try:
                self._codec.encode([entry[0]])
                good.append(entry)
            except Exception:
                bad.append(entry)
        with self._cond:
            for _, n, ticket in bad:
                self._in_flight -= n
                self._done += n
                self._count_drop_locked(n, "invalid", ticket, settle=True)
            self._runs = [[ticket, n, 0] for _, n, ticket in good]
            self._cond.notify_all()
        if not good:
            return None, 0
        rows = sum(n for _, n, _ in good)
        try:
            return self._codec.encode([item for item, _, _ in good]), rows
        except Exception:  # items fine alone but not together: give the batch up
            with self._cond:
                self._finish_batch_locked(rows, dropped=True, reason="invalid")
            return None, 0

    def _finish_batch_locked(self, n: int, *, dropped: bool, reason: str = "") -> None:
        """The batch in flight is over: written, or given up (its rows found already written
        by `dedupe()` count as written either way)."""
        self._in_flight = 0
        self._done += n
        plain = 0
        for ticket, rows, present in self._runs:
            if ticket is None:
                plain += rows
            elif dropped:
                ticket.settle(self.name, present, rows - present, reason)
            else:
                ticket.settle(self.name, rows)
        self._runs = []
        if dropped:
            self.dropped += n
            self._log_drop_locked(n, reason)
            if plain:
                self._listener.rows_dropped(self.name, plain, reason)
        else:
            self.written += n
            if plain:
                self._listener.rows_written(self.name, plain)
        self._cond.notify_all()

    def _write(self, batch: Any, count: int) -> tuple[BaseException | None, bool, Any]:
        """One insert attempt; returns (error or None, whether retrying may help, the batch:
        without the rows `dedupe()` found written already)."""
        description = self._conn.description
        try:
            client = self._conn.get()
        except Exception as exc:
            # Could not connect (or migrate): whatever the cause, the rows are not at fault.
            self._listener.write_failed(self.name)
            log.warning("telemetry: ClickHouse at %s unavailable, %d %s rows waiting: %s",
                        description, count, self.name, exc)
            return exc, True, batch
        try:
            if not self._deduped:
                batch = self._dedupe(client, batch)
            if batch.num_rows:
                self._codec.insert(client, self._conn.database, batch)
            return None, True, batch
        except Exception as exc:
            self._listener.write_failed(self.name)
            transient = _is_transient(exc)
            if transient:
                self._conn.invalidate(client)
                # A connection lost mid-insert (a server's timeout) may have written it: the
                # retry leaves out what ClickHouse has of the rows it can recognise.
                if getattr(self._codec, "dedupe", None) is not None and any(
                        run[0] is not None for run in self._runs):
                    self._deduped, self._recheck_all = False, True
            log.warning("telemetry: writing %d rows to %s (%s) failed: %s",
                        count, self._table, description, exc)
            return exc, transient, batch

    def _dedupe(self, client: Client, batch: Any) -> Any:
        """Leave out the suspect rows ClickHouse holds already (once per batch)."""
        ranges, at, offset = [], [], 0
        for i, (ticket, rows, present) in enumerate(self._runs):
            left = rows - present                   # what of this item is still in the batch
            if ticket is not None and (ticket.suspect or self._recheck_all):
                ranges.append((offset, left))
                at.append(i)
            offset += left
        batch, removed = self._codec.dedupe(client, self._conn.database, batch, ranges)
        for i, gone in zip(at, removed, strict=True):
            self._runs[i][2] += gone
        self._deduped = True
        if any(removed):
            log.info("telemetry: %d %s rows were in ClickHouse already (resent, or a retried insert): left out",
                     sum(removed), self.name)
        return batch

    def _count_drop_locked(self, n: int, reason: str, ticket: Ticket | None = None, *,
                           settle: bool = False) -> None:
        """`n` rows dropped: on their ticket (`settle`: and that item is over) or reported
        to the listener."""
        if ticket is not None:
            if settle:
                ticket.settle(self.name, 0, n, reason)
            else:
                ticket.count_dropped(self.name, n, reason)
        elif n:
            self._listener.rows_dropped(self.name, n, reason)
        if n:
            self.dropped += n
            self._log_drop_locked(n, reason)

    def _log_drop_locked(self, n: int, reason: str) -> None:
        self._unlogged_drops += n
        now = time.monotonic()
        if now - self._last_drop_log >= _DROP_LOG_EVERY_S:
            log.warning("telemetry: dropped %d %s rows (%s); total dropped %d",
                        self._unlogged_drops, self.name, reason, self.dropped)
            self._unlogged_drops = 0
            self._last_drop_log = now
