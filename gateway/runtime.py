"""The gateway's long-lived state, built once per app: config, keys, router, upstream
client, and the optional features behind their narrow interfaces."""

from __future__ import annotations

import asyncio
import logging

from gateway.auth import KeyStore
from gateway.config import SluiceConfig
from gateway.context import RequestContext
from gateway.observe import RequestObserver
from gateway.routing import BreakerState, Router
from gateway.types import Scope
from gateway.upstream import UPSTREAM_CLIENTS, UpstreamClient
from telemetry import Telemetry

logger = logging.getLogger("sluice")


class Gateway:
    def __init__(self, cfg: SluiceConfig):
        self.cfg = cfg
        self.data_dir = cfg.resolved_data_dir()
        self.keys = KeyStore(cfg.keys)
        self.telemetry = Telemetry.from_config(cfg.telemetry, self.data_dir)
        self.router = Router(cfg, on_breaker_change=self._on_breaker_change)
        self.observer = RequestObserver(self.telemetry, self.router)
        self.upstream: UpstreamClient = None  # type: ignore[assignment]   # created in start()
        self.ready = False

    async def start(self) -> None:
        if self.cfg.telemetry.enabled:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self.telemetry.start)        # connects + migrates ClickHouse
        server = self.cfg.server
        self.upstream = UPSTREAM_CLIENTS[server.upstream_client](server.max_upstream_connections)
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        if self.upstream is not None:
            await self.upstream.aclose()
        await asyncio.to_thread(self.telemetry.shutdown)     # flushes queued spans and rows

    def _on_breaker_change(self, deployment: str, state: BreakerState) -> None:
        logger.warning("circuit breaker for %s is now %s", deployment, state.value)
        self.telemetry.metrics.set_breaker_state(deployment, state.value)

    def report(self, since: str, by: str) -> str:
        """The `sluice report` table from this process's ClickHouse connection (blocking)."""
        from telemetry.report import parse_since, report
        if by not in ("model", "deployment", "tenant"):
            raise ValueError("by must be model, deployment or tenant")
        parse_since(since)
        if self.telemetry.connection is None:
            raise ValueError("telemetry is disabled")
        self.telemetry.flush(5.0)                 # include the requests just served
        return report(self.telemetry.connection.get(), self.telemetry.connection.database, since=since, by=by)

    def begin(self, ctx: RequestContext, scope: Scope) -> None:
        self.observer.start(ctx, scope)

    def record(self, ctx: RequestContext) -> None:
        """Hand the finished request to telemetry; never blocks or raises."""
        self.observer.finish(ctx, ctx.body)
