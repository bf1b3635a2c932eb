"""Prometheus metrics of the drift monitor: the latest value, threshold and alert flag of
every metric per segment, and how the runs go.

    sluice_drift_value{metric, public_model, deployment[, tenant]}      latest value
    sluice_drift_threshold{...}                                         what it is compared with
    sluice_drift_alerting{...}                                          1: alerting (alert_after_runs)
    sluice_model_events_total{kind}                                     response_model, ...
    sluice_monitor_runs_total{outcome}                                  ok | error | standby
    sluice_monitor_run_seconds                                          histogram of run durations
    sluice_monitor_leader                                               1 while this process runs it

Bounded labels: no prompt fingerprint (a segment per prompt version would grow for ever;
`drift_metrics` has them), tenant only with `monitoring.metrics_tenant_label`. Several
segments that differ only in what the labels leave out are folded into one series: the
one that alerts, else the one furthest past its threshold, so a gauge never hides an
alert. The label sets are the configured segments' (`max_segments`) times the fixed
metric names, capped at `max_series`; series a run no longer reports are removed, so a
segment that went quiet does not leave a stale alert behind.

In `sluice serve` they live in the gateway's registry (its /metrics); `sluice monitor run`
serves its own (`serve_metrics`).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterable
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger("sluice.monitoring")

_RUN_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
OUTCOMES = ("ok", "error", "standby")


class DriftRowLike(Protocol):
    metric: str
    public_model: str
    deployment: str
    tenant: str
    value: float | None
    threshold: float
    alerting: int


def _severity(row: DriftRowLike) -> tuple[int, float]:
    """Which row of a folded series to show: alerting first, then the furthest past its
    threshold (value / threshold), then any value over none."""
    value = row.value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return int(bool(row.alerting)), -math.inf
    ratio = value / row.threshold if row.threshold else value
    return int(bool(row.alerting)), ratio


class MonitorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None, *, tenant_label: bool = False,
                 max_series: int = 5000) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self._tenant_label = tenant_label
        self._max_series = max_series
        labels = ("metric", "public_model", "deployment", *(("tenant",) if tenant_label else ()))
        self.value = Gauge("sluice_drift_value", "Latest value of a drift metric per segment.", labels, registry=r)
        self.threshold = Gauge("sluice_drift_threshold", "Threshold the latest value was compared with.",
                               labels, registry=r)
        self.alerting = Gauge("sluice_drift_alerting",
                              "1 when the metric crossed its threshold in alert_after_runs consecutive runs.",
                              labels, registry=r)
        self.events = Counter("sluice_model_events", "New response models, system or prompt fingerprints seen.",
                              ("kind",), registry=r)
        self.runs = Counter("sluice_monitor_runs", "Monitor ticks by outcome (standby: another holder runs it).",
                            ("outcome",), registry=r)
        self.run_seconds = Histogram("sluice_monitor_run_seconds", "Duration of a monitor run.",
                                     buckets=_RUN_BUCKETS, registry=r)
        self.leader = Gauge("sluice_monitor_leader", "1 while this process holds the monitor lock.", registry=r)
        for outcome in OUTCOMES:
            self.runs.labels(outcome)                # present at 0 from the start
        self._series: set[tuple[str, ...]] = set()
        self._lock = threading.Lock()
        self._warned_cap = False

    def run_finished(self, outcome: str, seconds: float | None = None) -> None:
        self.runs.labels(outcome).inc()
        if seconds is not None:
            self.run_seconds.observe(seconds)

    def observe(self, result: Any) -> None:
        """Set the gauges from a `RunResult` (`.metrics`: drift rows, `.events`: model events)."""
        self.set_drift(getattr(result, "metrics", ()) or ())
        for event in getattr(result, "events", ()) or ():
            self.events.labels(str(event.kind)).inc()

    def set_drift(self, rows: Iterable[DriftRowLike]) -> None:
        chosen: dict[tuple[str, ...], DriftRowLike] = {}
        for row in rows:
            key = (row.metric, row.public_model, row.deployment, *((row.tenant,) if self._tenant_label else ()))
            held = chosen.get(key)
            if held is None and len(chosen) >= self._max_series:
                if not self._warned_cap:
                    log.warning("monitor: more than %d drift series; the rest are left out of /metrics "
                                "(drift_metrics has them all)", self._max_series)
                    self._warned_cap = True
                continue
            if held is None or _severity(row) > _severity(held):
                chosen[key] = row
        with self._lock:
            for gone in self._series - chosen.keys():
                for gauge in (self.value, self.threshold, self.alerting):
                    try:
                        gauge.remove(*gone)
                    except KeyError:
                        pass
            for key, row in chosen.items():
                if row.value is not None:
                    self.value.labels(*key).set(row.value)
                else:
                    try:
                        self.value.remove(*key)     # no value this run (too few samples): no stale one
                    except KeyError:
                        pass
                self.threshold.labels(*key).set(row.threshold)
                self.alerting.labels(*key).set(1 if row.alerting else 0)
            self._series = set(chosen)

    def clear_drift(self) -> None:
        """This process stopped running the monitor: its gauges would only go stale."""
        self.set_drift(())
        self.leader.set(0)


def serve_metrics(metrics: MonitorMetrics, port: int, host: str = "0.0.0.0"):
    """/metrics of a standalone monitor (`sluice monitor run`, `monitoring.metrics_port`) on
    a daemon thread. Returns the server; `.shutdown()` stops it. Drift values name models
    and deployments, never prompts or keys."""
    server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    log.info("monitor: /metrics on %s:%d", host, port)
    return server
