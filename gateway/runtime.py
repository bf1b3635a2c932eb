"""The gateway's long-lived state, built once per app: config, keys, router, upstream
client, and the optional features behind their narrow interfaces."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Coroutine
from typing import Any

from cache import ResponseCache
from gateway.auth import KeyStore
from gateway.config import SluiceConfig
from gateway.context import RequestContext
from gateway.feedback import FeedbackService
from gateway.observe import RequestObserver
from gateway.quota.service import QuotaService
from gateway.routing import BreakerState, Router
from gateway.types import Operation, Scope
from gateway.upstream import UPSTREAM_CLIENTS, UpstreamClient
from gateway.wire.limits import RequestLimits
from guardrails import GuardrailEngine, Policy
from telemetry import Telemetry
from telemetry.report import parse_since

logger = logging.getLogger("sluice")


class Gateway:
    def __init__(self, cfg: SluiceConfig):
        self.cfg = cfg
        self.data_dir = cfg.resolved_data_dir()
        self.limits = RequestLimits.from_config(cfg)
        self.telemetry = Telemetry.from_config(cfg.telemetry, self.data_dir)
        self.quota = QuotaService(cfg, self.telemetry, self.limits.model_output_tokens)   # rate limits, budgets
        evaluator_key = cfg.monitoring.evaluator_key
        self.keys = KeyStore(cfg.keys, self.quota.keys,
                             evaluator_key.get_secret_value() if evaluator_key is not None else None)
        self.router = Router(cfg, on_breaker_change=self._on_breaker_change)
        self.observer = RequestObserver(self.telemetry, self.router)
        self.cache = ResponseCache.from_config(cfg.cache, self.data_dir) if cfg.cache.enabled else None
        self.guardrails = GuardrailEngine.from_config(cfg.guardrails) if cfg.guardrails.any_policy() else None
        self.monitor = self._drift_monitor(cfg) if cfg.monitoring.in_process else None
        # POST /v1/feedback and the implicit signals: rows of `feedback`, so telemetry must be on
        self.feedback = (FeedbackService(cfg.feedback, self.telemetry, frozenset(cfg.models))
                         if cfg.feedback.enabled and self.telemetry.enabled else None)
        self.upstream: UpstreamClient = None  # type: ignore[assignment]   # created in start()
        self._tasks: set[asyncio.Task] = set()
        self.ready = False

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self.telemetry.start)        # connects + migrates ClickHouse
        if self.guardrails is not None:
            try:
                await self.guardrails.start()                # loads Presidio / Detoxify in threads
            except ImportError as exc:
                # A configured guardrail must not silently not run: refuse to start, plainly.
                raise RuntimeError(f"guardrails are configured but {exc.name} is not installed "
                                   f"(pip install 'sluice-gateway[pii]' / '[toxicity]')") from None
            logger.info("guardrails ready (toxicity backend: %s)", self.guardrails.toxicity_backend or "off")
        if self.cache is not None:
            await self.cache.start()                         # Redis index / embedded store, embedder
            self.telemetry.metrics.set_cache_semantic(self.cache.semantic_available)
        await self.quota.start()                             # loads the limiter's scripts into Redis
        server = self.cfg.server
        self.upstream = UPSTREAM_CLIENTS[server.upstream_client](server.max_upstream_connections)
        # Everything built so far (config, models, libraries) lives as long as the process:
        # move it out of the collector's reach. Without this, full collections walked it
        # all every few seconds under load: 45-50 ms pauses, the whole p99 (docs/benchmarks.md).
        gc.collect()
        gc.freeze()
        if self.monitor is not None:
            self.monitor.start()                             # its own threads; first run after a delay
        self.ready = True

    async def stop(self, grace_s: float = 5.0) -> None:
        self.ready = False
        if self._tasks:                                      # cache stores still in flight
            await asyncio.wait(self._tasks, timeout=grace_s)
        if self.upstream is not None:
            await self.upstream.aclose()
        if self.cache is not None:
            await self.cache.aclose()
        await self.quota.aclose()                            # sends the settlements still queued
        if self.monitor is not None:
            await asyncio.to_thread(self.monitor.stop)       # before telemetry: a run may use its collector
        if self.guardrails is not None:
            await self.guardrails.aclose()
        if self.feedback is not None:
            await self.feedback.aclose()                     # queued feedback rows, before telemetry
        await asyncio.to_thread(self.telemetry.shutdown)     # flushes queued spans and rows

    def _drift_monitor(self, cfg: SluiceConfig):
        """`monitoring.in_process`: the drift monitor in this process (docs/monitoring.md),
        gauges in this gateway's /metrics, one replica at a time through a lock."""
        from monitoring.loop import in_process_loop
        return in_process_loop(cfg.monitoring, self.telemetry, self.data_dir,
                               registry=self.telemetry.metrics.registry,
                               fallback_redis_urls=(cfg.limits.redis_url, cfg.cache.redis_url))

    def background(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run follow-up work (cache stores) after the response, tracked until shutdown."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def guardrail_policy(self, ctx: RequestContext) -> Policy | None:
        if self.guardrails is None or ctx.operation is not Operation.CHAT:
            return None
        return self.guardrails.policy_for(ctx.principal.tenant, ctx.public_model)

    def _on_breaker_change(self, deployment: str, state: BreakerState) -> None:
        logger.warning("circuit breaker for %s is now %s", deployment, state.value)
        self.telemetry.metrics.set_breaker_state(deployment, state.value)

    def report(self, since: str, by: str) -> str:
        """The `sluice report` table from telemetry's ClickHouse connection (blocking)."""
        if by not in ("model", "deployment", "tenant", "key"):
            raise ValueError("by must be model, deployment, tenant or key")
        parse_since(since)
        text = self.telemetry.report(since, by)      # flushes first: includes the requests just served
        if by in ("key", "tenant") and self.quota.active:
            text += self.quota.budget_report(by, self.keys.configured())   # spend and budget left, now
        return text

    def begin(self, ctx: RequestContext, scope: Scope) -> None:
        self.observer.start(ctx, scope)

    def record(self, ctx: RequestContext) -> None:
        """Hand the finished request to telemetry; never blocks or raises."""
        rec = self.observer.finish(ctx, ctx.body)
        if self.feedback is not None:
            try:
                self.feedback.observe(ctx, rec)              # look-ups of recent requests, implicit signals
            except Exception:
                logger.exception("feedback: implicit signals of request %s not recorded", ctx.request_id)
