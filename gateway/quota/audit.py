"""Admin actions on their way to ClickHouse's `admin_audit`, without holding up the answer.

`record()` logs the action and queues its row (bounded; what overflows is counted and
logged); one tracked task hands queued rows to telemetry in a thread (`Telemetry.audit`:
the in-process writer's connection or the collector's) and retries with back-off while
ClickHouse is unavailable. Nothing here sees a key's secret.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from telemetry import Telemetry

log = logging.getLogger("sluice.admin")
_BATCH = 500


class AuditLog:
    def __init__(self, telemetry: Telemetry, max_queue: int = 10_000) -> None:
        self._tel = telemetry
        self._queue: deque[tuple] = deque()
        self._max = max_queue
        self._task: asyncio.Task | None = None
        self.dropped = 0
        self.written = 0

    def record(self, *, request_id: str, actor: str, client_ip: str, action: str, target_type: str,
               target_id: str, tenant: str, status: int, detail: dict[str, Any] | None = None) -> None:
        log.info("admin: %s %s %s (tenant %s) by %s from %s -> %d", action, target_type, target_id or "-",
                 tenant or "-", actor, client_ip or "?", status)
        if not self._tel.enabled:
            return
        if len(self._queue) >= self._max:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error("admin: audit queue full, %d audit rows dropped so far", self.dropped)
            return
        self._queue.append((datetime.now(timezone.utc), request_id, actor, client_ip, action, target_type,
                            target_id, tenant, status, orjson.dumps(detail or {}).decode()))
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        backoff = 0.5
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(_BATCH, len(self._queue)))]
            try:
                await asyncio.to_thread(self._tel.audit, batch)
                self.written += len(batch)
                backoff = 0.5
            except Exception as exc:
                self._queue.extendleft(reversed(batch))
                log.warning("admin: audit rows not written yet (%s: %s); retrying in %.1f s",
                            type(exc).__name__, str(exc)[:200], backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    async def aclose(self, timeout_s: float = 5.0) -> None:
        if self._task is not None and not self._task.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
            except asyncio.TimeoutError:
                self._task.cancel()
                log.error("admin: %d audit rows not written at shutdown", len(self._queue))
