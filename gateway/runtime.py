"""The gateway's long-lived state, built once per app: config, keys, router, upstream
client, and the optional features behind their narrow interfaces."""

from __future__ import annotations

import logging

from gateway.auth import KeyStore
from gateway.config import SluiceConfig
from gateway.context import RequestContext
from gateway.routing import BreakerState, Router
from gateway.upstream import UPSTREAM_CLIENTS, UpstreamClient

logger = logging.getLogger("sluice")


class Gateway:
    def __init__(self, cfg: SluiceConfig):
        self.cfg = cfg
        self.keys = KeyStore(cfg.keys)
        self.router = Router(cfg, on_breaker_change=self._on_breaker_change)
        self.upstream: UpstreamClient = None  # type: ignore[assignment]   # created in start()
        self.ready = False

    async def start(self) -> None:
        server = self.cfg.server
        self.upstream = UPSTREAM_CLIENTS[server.upstream_client](server.max_upstream_connections)
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        if self.upstream is not None:
            await self.upstream.aclose()

    def _on_breaker_change(self, deployment: str, state: BreakerState) -> None:
        logger.warning("circuit breaker for %s is now %s", deployment, state.value)

    def record(self, ctx: RequestContext) -> None:
        """Hand the finished request to telemetry; must never block or raise."""
