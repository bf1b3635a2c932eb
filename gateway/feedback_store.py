"""Where feedback meets ClickHouse: finding the rated request, and writing the rows.

    FeedbackStore
    ├── recent: RecentRequests   requests this process answered (an LRU): found at once,
    │                            before their row is written, even with ClickHouse down
    ├── find()                   else `llm_requests`, filtered by the caller's tenant, in a
    │                            thread, within `feedback.lookup_timeout_s` (else 503)
    └── write()                  a bounded queue; one tracked task inserts batches in a
                                 thread through telemetry's ClickHouse connection (the
                                 in-process writers' client, or the collector's), retrying
                                 with back-off while ClickHouse is down

Finding by tenant in the SQL itself makes another tenant's request and a request that does
not exist the same answer (None, then a 404), in the same time: a caller learns nothing
about other tenants' ids.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, NamedTuple

from prometheus_client import Counter

from gateway.feedback_config import FeedbackConfig
from telemetry.feedback import FEEDBACK_COLUMNS, FEEDBACK_TABLE, FeedbackRow

if TYPE_CHECKING:
    from telemetry import Telemetry

log = logging.getLogger("sluice.feedback")
_BATCH = 1000
_WRITE_TIMEOUT_S = 30.0
_LOOKUP_THREADS = 4


class RatedRequest(NamedTuple):
    """What a feedback row copies from the request it rates."""

    request_id: str
    trace_id: str
    tenant: str
    public_model: str
    deployment: str
    prompt_fingerprint: str
    user: str = ""                   # the end user the request named (OpenAI `user`)


class FeedbackUnavailable(RuntimeError):
    """The rated request could not be looked up (ClickHouse down, slow, or no telemetry)."""


class RecentRequests:
    """The last `size` requests of this process, by request id and by trace id (an LRU)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._by_request: OrderedDict[str, RatedRequest] = OrderedDict()
        self._by_trace: dict[str, str] = {}          # trace id -> its latest request id

    def add(self, rated: RatedRequest) -> None:
        if self._size <= 0 or not rated.request_id:
            return
        self._by_request[rated.request_id] = rated
        if rated.trace_id:
            self._by_trace[rated.trace_id] = rated.request_id
        while len(self._by_request) > self._size:
            _, old = self._by_request.popitem(last=False)
            if self._by_trace.get(old.trace_id) == old.request_id:
                del self._by_trace[old.trace_id]

    def find(self, tenant: str, request_id: str | None, trace_id: str | None) -> RatedRequest | None:
        if trace_id is not None:
            request_id = self._by_trace.get(trace_id)
        rated = self._by_request.get(request_id) if request_id else None
        return rated if rated is not None and rated.tenant == tenant else None

    def __len__(self) -> int:
        return len(self._by_request)


class FeedbackStore:
    def __init__(self, cfg: FeedbackConfig, telemetry: Telemetry, registry: Any = None,
                 models: frozenset[str] = frozenset()) -> None:
        self.cfg = cfg
        self._models = models           # public models with a series of their own (the rest: "other")
        self._tel = telemetry
        self.recent = RecentRequests(cfg.recent_requests)
        self._queue: deque[tuple] = deque()
        self._task: asyncio.Task | None = None
        self._clients: dict[str, Any] = {}
        self._lookups = ThreadPoolExecutor(_LOOKUP_THREADS, thread_name_prefix="sluice-feedback-lookup")
        self.dropped = 0
        self.written = 0
        self._signals = Counter("sluice_feedback_total", "Feedback recorded, by public model (configured ones; "
                                "others count as 'other'), source (explicit | implicit), kind (known kinds; others "
                                "count as 'other') and rating (positive: score >= 0.5, negative, none)",
                                ["public_model", "source", "kind", "rating"], registry=registry)
        self._lost = Counter("sluice_feedback_dropped_total", "Feedback rows dropped (write queue full, or "
                             "still queued at shutdown)", ["reason"], registry=registry)

    # -- the rated request -----------------------------------------------------------------

    async def find(self, tenant: str, request_id: str | None, trace_id: str | None) -> RatedRequest | None:
        """The caller's tenant's request (by request id, or the latest of a trace); None if
        it has none by that id. FeedbackUnavailable when ClickHouse cannot say in time."""
        rated = self.recent.find(tenant, request_id, trace_id)
        if rated is not None:
            return rated
        if not self._tel.enabled:
            raise FeedbackUnavailable("telemetry is disabled: there are no requests to rate")
        timeout = self.cfg.lookup_timeout_s
        # Threads of their own: a look-up that outlives its timeout keeps its thread until
        # ClickHouse answers, and a hung server must not take the threads the gateway's other
        # blocking work shares (look-ups queued behind them time out: 503).
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(
                loop.run_in_executor(self._lookups, self._lookup, tenant, request_id, trace_id), timeout)
        except asyncio.TimeoutError:
            raise FeedbackUnavailable(f"the request log did not answer within {timeout:g} s") from None
        except Exception as exc:
            log.warning("feedback: request look-up failed: %s: %s", type(exc).__name__, str(exc)[:200])
            raise FeedbackUnavailable("the request log (ClickHouse) is unavailable") from None

    def _lookup(self, tenant: str, request_id: str | None, trace_id: str | None) -> RatedRequest | None:
        client, database = self._client("lookup", self.cfg.lookup_timeout_s)
        column, value = ("trace_id", trace_id) if trace_id is not None else ("request_id", request_id)
        rows = client.query(
            f"SELECT request_id, trace_id, tenant, toString(public_model), toString(deployment), "
            f"toString(prompt_fingerprint), user FROM `{database}`.llm_requests "
            f"WHERE {column} = {{id:String}} AND tenant = {{tenant:String}} "
            f"ORDER BY timestamp DESC LIMIT 1", parameters={"id": value, "tenant": tenant}).result_rows
        return RatedRequest(*(str(v) for v in rows[0])) if rows else None

    def _client(self, purpose: str, timeout_s: float) -> tuple[Any, str]:
        """telemetry's ClickHouse connection: the in-process writers' client, or calls run
        by the collector (on a connection of their own per purpose: a slow insert must not
        hold up a look-up)."""
        cfg = self._tel.config
        if self._tel.sink is not None:
            connection = self._tel.sink.connection
            return connection.get(), connection.database
        client = self._clients.get(purpose)
        if client is None:
            from monitoring.store import CollectorTraceClient
            from telemetry.clickhouse import url_database
            client = self._clients[purpose] = CollectorTraceClient(self._tel.client.socket_path, timeout_s=timeout_s)
            self._database = url_database(cfg.clickhouse_url or "") or cfg.database
        return client, self._database

    # -- writing -------------------------------------------------------------------------

    def write(self, row: FeedbackRow) -> None:
        """Queue a row (never blocks); past `queue_max` it is dropped, logged and counted."""
        self._count(row)
        if not self._tel.enabled:
            return
        if len(self._queue) >= self.cfg.queue_max:
            self._drop(1, "queue_full")
            return
        self._queue.append(row.as_row())
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._drain())

    def _count(self, row: FeedbackRow) -> None:
        rating = "none" if row.score is None else "positive" if row.score >= 0.5 else "negative"
        kind = row.kind if row.kind in KNOWN_KINDS else "other"
        model = row.public_model if row.public_model in self._models else "other"
        self._signals.labels(model, row.source, kind, rating).inc()

    def _drop(self, count: int, reason: str) -> None:
        self.dropped += count
        self._lost.labels(reason).inc(count)
        if self.dropped == count or self.dropped % 1000 < count:
            log.error("feedback: %d rows dropped so far (%s)", self.dropped, reason)

    async def _drain(self) -> None:
        backoff = 0.5
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(_BATCH, len(self._queue)))]
            try:
                await asyncio.to_thread(self._insert, batch)
                self.written += len(batch)
                backoff = 0.5
            except Exception as exc:
                self._queue.extendleft(reversed(batch))
                log.warning("feedback: %d rows not written yet (%s: %s); retrying in %.1f s", len(self._queue),
                            type(exc).__name__, str(exc)[:200], backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    def _insert(self, rows: list[tuple]) -> None:
        client, database = self._client("write", _WRITE_TIMEOUT_S)
        client.insert(f"{database}.{FEEDBACK_TABLE}", rows, column_names=list(FEEDBACK_COLUMNS))

    async def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until the queued rows are written (tests, shutdown); True when none is left."""
        if self._task is not None and not self._task.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
            except asyncio.TimeoutError:
                pass
        return not self._queue

    async def aclose(self, timeout_s: float = 5.0) -> None:
        if not await self.flush(timeout_s):
            if self._task is not None:
                self._task.cancel()
            self._drop(len(self._queue), "shutdown")
            self._queue.clear()
        self._lookups.shutdown(wait=False, cancel_futures=True)
        for client in self._clients.values():
            client.close()


# Kinds with a series of their own in sluice_feedback_total (the others are "other").
KNOWN_KINDS = frozenset({"rating", "accept", "accept_edited", "copy", "regenerate", "report", "abandon",
                         "edit", "share", "flag"})
