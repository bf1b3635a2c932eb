"""`MonitorLoop`: the drift monitor on a schedule, in a thread of its own.

Every `interval_s` (fixed rate, counted from each run's start) the loop takes its lock
(`monitoring.lock`: one holder among replicas) and, if it holds it, calls
`monitoring.runner.run_once` on a trace store (`monitoring.store`), then sets the gauges
(`monitoring.metrics`). Without the lock it stands by (counted `standby`) and tries again
next tick. While it holds the lock a heartbeat thread renews it every third of its TTL,
during runs too (a run may outlast the TTL); if a renewal finds the lock gone the gauges
are cleared and the next tick competes again. A run that raises is counted (`error`),
logged once per distinct error (then at debug: a ClickHouse outage must not log a trace
every five minutes), and the store is reopened on the next tick; the loop goes on.

Blocking throughout (ClickHouse, Redis, model inference): `sluice serve` starts it from its
lifespan, and nothing of it runs on the event loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitoring.config import MonitoringConfig
from monitoring.lock import FileLock, MonitorLock, RedisLock
from monitoring.metrics import MonitorMetrics

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from telemetry.service import Telemetry

log = logging.getLogger("sluice.monitoring")

OpenStore = Callable[[], tuple[Any, str]]
RunOnce = Callable[..., Any]
_DISTINCT_ERRORS_MAX = 100


def _default_run_once() -> RunOnce:
    """The monitor's job: the drift run, then the evaluators (monitoring/evaluators/job.py)."""
    from monitoring.evaluators.job import MonitorJob
    return MonitorJob()


class MonitorLoop:
    def __init__(self, cfg: MonitoringConfig, open_store: OpenStore, *, lock: MonitorLock | None = None,
                 metrics: MonitorMetrics | None = None, embedder: Any = None, run_once: RunOnce | None = None,
                 start_delay_s: float = 0.0) -> None:
        """`open_store() -> (client, database)` is called before the first run and again
        after a failed one. `lock=None`: no other holder to fear (always runs). `run_once`
        replaces the runner (tests, benchmarks). `start_delay_s`: wait before the first run
        (a gateway warming up)."""
        self.cfg = cfg
        self._open_store = open_store
        self._lock = lock
        self.metrics = metrics if metrics is not None else MonitorMetrics(tenant_label=cfg.metrics_tenant_label)
        self._embedder = embedder
        self._run_once = run_once or _default_run_once()
        self._start_delay_s = start_delay_s
        self._store: tuple[Any, str] | None = None
        self._stop = threading.Event()
        self._holding = threading.Event()
        self._thread: threading.Thread | None = None
        self._heartbeat: threading.Thread | None = None
        self._errors_seen: set[tuple[str, str]] = set()
        # What happened so far (read by tests and `sluice monitor run`'s log line).
        self.runs_ok = 0
        self.runs_failed = 0
        self.last_result: Any = None
        self.last_error: BaseException | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sluice-monitor", daemon=True)
        self._thread.start()
        if self._lock is not None:
            self._heartbeat = threading.Thread(target=self._renew_forever, name="sluice-monitor-lock", daemon=True)
            self._heartbeat.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop after the run in progress (waiting up to `timeout_s` for it) and release the
        lock, so another replica takes over at once rather than after the TTL."""
        self._stop.set()
        for thread in (self._thread, self._heartbeat):
            if thread is not None:
                thread.join(timeout_s)
        self._thread = self._heartbeat = None
        if self._lock is not None and self._holding.is_set():
            try:
                self._lock.release()
            except Exception as exc:
                log.warning("monitor: could not release its lock (%s); it expires after %gs",
                            exc, self.cfg.lock_ttl_s)
        self._holding.clear()
        self.metrics.leader.set(0)
        self._close_store()
        close_job = getattr(self._run_once, "close", None)   # the evaluators' HTTP client and models
        if close_job is not None:
            close_job()

    @property
    def holding(self) -> bool:
        return self._holding.is_set()

    def run_now(self) -> Any:
        """One run in the calling thread, lock permitting: the RunResult, or None when another
        holder has the lock. Raises what the run raised (counted like a scheduled run)."""
        if not self._take_lock():
            self.metrics.run_finished("standby")
            return None
        return self._one_run(raise_errors=True)

    # -- the loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        if self._start_delay_s and self._stop.wait(self._start_delay_s):
            return
        while not self._stop.is_set():
            started = time.monotonic()
            if self._take_lock():
                self._one_run(raise_errors=False)
            else:
                self.metrics.run_finished("standby")
            self._stop.wait(max(0.0, self.cfg.interval_s - (time.monotonic() - started)))

    def _one_run(self, *, raise_errors: bool) -> Any:
        started = time.monotonic()
        try:
            if self._store is None:
                self._store = self._open_store()
            client, database = self._store
            result = self._run_once(client, database, self.cfg, embedder=self._embedder)
        except Exception as exc:
            self.runs_failed += 1
            self.last_error = exc
            self.metrics.run_finished("error", time.monotonic() - started)
            self._log_failure(exc)
            self._close_store()                      # reopened next time (a collector restarted, ...)
            if raise_errors:
                raise
            return None
        self.runs_ok += 1
        self.last_result = result
        self.metrics.run_finished("ok", time.monotonic() - started)
        if self._holding.is_set() or self._lock is None:    # lost it mid-run: leave the gauges to the holder
            self.metrics.observe(result)
        return result

    def _log_failure(self, exc: BaseException) -> None:
        key = (type(exc).__name__, str(exc)[:200])
        if key in self._errors_seen:
            log.debug("monitor: run failed again: %s: %s", *key)
            return
        if len(self._errors_seen) < _DISTINCT_ERRORS_MAX:
            self._errors_seen.add(key)
        log.error("monitor: run failed (%s: %s); counted in sluice_monitor_runs_total{outcome=\"error\"}, "
                  "retried every %gs, logged once per distinct error", key[0], key[1], self.cfg.interval_s,
                  exc_info=exc)

    # -- the lock ---------------------------------------------------------------------------

    def _take_lock(self) -> bool:
        if self._lock is None:
            self.metrics.leader.set(1)
            return True
        try:
            held = self._lock.acquire()
        except Exception as exc:
            self._log_failure(exc)
            held = False
        self._set_holding(held)
        return held

    def _renew_forever(self) -> None:
        every = max(0.05, self.cfg.lock_ttl_s / 3)
        while not self._stop.wait(every):
            if not self._holding.is_set():
                continue
            try:
                still = self._lock.renew()
            except Exception as exc:
                self._log_failure(exc)
                still = False
            if not still:
                log.warning("monitor: lost its lock (expired or taken over); standing by")
            self._set_holding(still)

    def _set_holding(self, held: bool) -> None:
        if held:
            if not self._holding.is_set():
                log.info("monitor: this process now runs the drift monitor")
            self._holding.set()
            self.metrics.leader.set(1)
        elif self._holding.is_set():
            self._holding.clear()
            self.metrics.clear_drift()

    def _close_store(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            close = getattr(store[0], "close", None)
            if close is not None and getattr(store[0], "socket_path", None) is not None:
                close()                              # a collector connection; shared clients stay open


def in_process_loop(cfg: MonitoringConfig, telemetry: Telemetry, data_dir: Path, *,
                    registry: CollectorRegistry, fallback_redis_urls: tuple[str | None, ...] = ()) -> MonitorLoop:
    """The loop `sluice serve` runs with `monitoring.in_process: true`: traces from the
    gateway's own telemetry (`store.in_process_store`), gauges in the gateway's registry,
    a Redis lock when a Redis is configured (`monitoring.redis_url`, else the cache's or the
    limits'), else a file lock in the data directory (one holder among this host's workers)."""
    from monitoring.store import in_process_store

    url = cfg.lock_redis_url(*fallback_redis_urls)
    if url:
        lock: MonitorLock = RedisLock(url, ttl_s=cfg.lock_ttl_s)
    else:
        lock = FileLock(Path(data_dir) / "monitor.lock")
        if telemetry.config.clickhouse_url and not telemetry.config.clickhouse_url.startswith("chdb://"):
            log.warning("monitor: in_process with a ClickHouse server but no Redis: every replica on another "
                        "host runs it too (set monitoring.redis_url)")
    metrics = MonitorMetrics(registry, tenant_label=cfg.metrics_tenant_label)
    from monitoring.evaluators.job import MonitorJob
    return MonitorLoop(cfg, lambda: in_process_store(telemetry, data_dir), lock=lock, metrics=metrics,
                       run_once=MonitorJob(tracer=telemetry.tracer, models_dir=Path(data_dir) / "models"),
                       start_delay_s=min(cfg.interval_s, 10.0))
