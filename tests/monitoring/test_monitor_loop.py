"""`MonitorLoop`: scheduled runs of the real runner on chDB, one holder at a time through a
real Redis lock (or a file lock), failures counted without stopping the loop, gauges from
the runs, and the loop inside a running gateway (`monitoring.in_process`)."""

from __future__ import annotations

import itertools
import logging
import time
from datetime import datetime, timezone

import httpx
import openai
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from monitoring.config import MonitoringConfig
from monitoring.lock import FileLock, RedisLock
from monitoring.loop import MonitorLoop
from monitoring.metrics import MonitorMetrics
from telemetry.drift_tables import DriftRow, ModelEvent
from telemetry.schema import migrate
from tests.conftest import PRIMARY_KEY
from tests.gateway_server import start_gateway

_n = itertools.count()
GATEWAY_KEY = "sluice-loop-test-secret"


def _sample(metrics: MonitorMetrics, name: str, **labels: str) -> float | None:
    value = metrics.registry.get_sample_value(name, labels)
    return value


def _wait(predicate, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def store(ch):
    database = f"monitor_loop_{next(_n)}"
    migrate(ch, database)
    yield ch, database
    ch.command(f"DROP DATABASE IF EXISTS `{database}`")


def _cfg(**overrides) -> MonitoringConfig:
    return MonitoringConfig(**{"interval_s": 0.05, "lock_ttl_s": 0.6, "window_s": 60, "baseline_s": 600,
                               **overrides})


def _lock(redis_plain, key: str, ttl_s: float) -> RedisLock:
    return RedisLock(redis_plain.url, ttl_s=ttl_s, key=key)


def test_two_loops_on_one_redis_lock_only_one_runs(store, redis_plain):
    cfg = _cfg()
    key = f"test:monitor:{next(_n)}"
    loops = [MonitorLoop(cfg, lambda: store, lock=_lock(redis_plain, key, cfg.lock_ttl_s)) for _ in range(2)]
    for loop in loops:
        loop.start()
    try:
        assert _wait(lambda: sum(loop.runs_ok for loop in loops) >= 8)
        running = [loop for loop in loops if loop.runs_ok]
        standby = [loop for loop in loops if not loop.runs_ok]
        assert len(running) == 1 and len(standby) == 1      # renewed between runs: never handed over
        assert running[0].runs_failed == 0 and running[0].last_result is not None
        assert _sample(standby[0].metrics, "sluice_monitor_runs_total", outcome="standby") > 0
        assert _sample(running[0].metrics, "sluice_monitor_leader") == 1
        assert _sample(standby[0].metrics, "sluice_monitor_leader") == 0
    finally:
        for loop in loops:
            loop.stop()


def test_an_expired_lock_hands_over_and_a_stopped_holder_releases_at_once(store, redis_plain):
    cfg = _cfg(lock_ttl_s=1.0)
    key = f"test:monitor:{next(_n)}"
    crashed = _lock(redis_plain, key, cfg.lock_ttl_s)
    assert crashed.acquire()                   # a replica that took the lock, then died (no renewal)
    taken_at = time.monotonic()
    b = MonitorLoop(cfg, lambda: store, lock=_lock(redis_plain, key, cfg.lock_ttl_s))
    b.start()
    try:
        assert _wait(lambda: b.runs_ok > 0)
        assert time.monotonic() - taken_at >= cfg.lock_ttl_s * 0.9      # only once the TTL ran out
        assert _sample(b.metrics, "sluice_monitor_runs_total", outcome="standby") > 0

        c = MonitorLoop(_cfg(lock_ttl_s=30.0), lambda: store, lock=_lock(redis_plain, key, 30.0))
        c.start()
        try:
            time.sleep(0.3)
            assert c.runs_ok == 0
            b.stop()                           # releases: c need not wait out b's TTL
            stopped_at = time.monotonic()
            assert _wait(lambda: c.runs_ok > 0, timeout_s=5.0)
            assert time.monotonic() - stopped_at < 5.0
        finally:
            c.stop()
        assert _lock(redis_plain, key, 1.0).holder() is None           # c released it too
    finally:
        b.stop()


def test_a_failing_run_is_counted_logged_once_and_the_loop_goes_on(ch, caplog):
    database = f"monitor_loop_{next(_n)}"      # no tables yet: every run fails in ClickHouse
    loop = MonitorLoop(_cfg(), lambda: (ch, database), lock=None)
    caplog.set_level(logging.DEBUG, logger="sluice.monitoring")
    loop.start()
    try:
        assert _wait(lambda: loop.runs_failed >= 3)
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name == "sluice.monitoring"]
        assert len(errors) == 1 and "run failed" in errors[0].getMessage()
        assert _sample(loop.metrics, "sluice_monitor_runs_total", outcome="error") >= 3
        assert _sample(loop.metrics, "sluice_monitor_run_seconds_count") >= 3

        migrate(ch, database)                  # the cause goes away: the same loop recovers
        assert _wait(lambda: loop.runs_ok >= 2)
        assert _sample(loop.metrics, "sluice_monitor_runs_total", outcome="ok") >= 2
    finally:
        loop.stop()
        ch.command(f"DROP DATABASE IF EXISTS `{database}`")


def test_file_lock_admits_one_holder_until_released(tmp_path):
    first, second = FileLock(tmp_path / "monitor.lock"), FileLock(tmp_path / "monitor.lock")
    assert first.acquire() and first.acquire() and first.renew()
    assert not second.acquire() and not second.renew()
    first.release()
    assert second.acquire()
    second.release()


def _row(metric: str, fingerprint: str, value: float | None, threshold: float, alerting: int,
         model: str = "gpt") -> DriftRow:
    now = datetime.now(timezone.utc)
    return DriftRow(now, now, now, now, now, model, "primary/m1", "team", fingerprint, metric, "m",
                    value, None, threshold, int(alerting), alerting, 500, 500, "")


def test_gauges_fold_prompt_versions_keep_alerts_and_drop_stale_series():
    metrics = MonitorMetrics()
    labels = {"metric": "refusal_rate", "public_model": "gpt", "deployment": "primary/m1"}
    metrics.set_drift([_row("refusal_rate", "aaaa", 0.9, 0.1, 0), _row("refusal_rate", "bbbb", 0.2, 0.1, 1),
                       _row("latency_p95_ms", "aaaa", None, 300.0, 0, model="claude")])
    # two prompt versions of one model: one series, the alerting one shown
    assert _sample(metrics, "sluice_drift_alerting", **labels) == 1
    assert _sample(metrics, "sluice_drift_value", **labels) == pytest.approx(0.2)
    assert _sample(metrics, "sluice_drift_threshold", **labels) == pytest.approx(0.1)
    quiet = {"metric": "latency_p95_ms", "public_model": "claude", "deployment": "primary/m1"}
    assert _sample(metrics, "sluice_drift_threshold", **quiet) == 300.0
    assert _sample(metrics, "sluice_drift_value", **quiet) is None       # no value: no made-up one
    assert b"tenant=" not in generate_latest(metrics.registry)             # tenant label off by default

    metrics.set_drift([_row("refusal_rate", "aaaa", 0.05, 0.1, 0)])       # claude went quiet
    assert _sample(metrics, "sluice_drift_alerting", **labels) == 0
    assert _sample(metrics, "sluice_drift_threshold", **quiet) is None

    now = datetime.now(timezone.utc)
    events = [ModelEvent(now, "gpt", "primary/m1", "team", "response_model", "", "m1-2026", now, 3, 0)] * 2
    metrics.observe(type("Result", (), {"metrics": [], "events": events})())
    assert _sample(metrics, "sluice_model_events_total", kind="response_model") == 2
    assert _sample(metrics, "sluice_drift_alerting", **labels) is None


def test_in_process_monitor_runs_inside_the_gateway_and_stops_with_it(primary, chdb_url, ch, tmp_path):
    database = f"monitor_inproc_{next(_n)}"
    data_dir = tmp_path / "data"
    gw = start_gateway({
        "data_dir": str(data_dir),
        "telemetry": {"clickhouse_url": chdb_url, "database": database, "flush_interval_s": 0.05,
                      "writer": "thread"},
        "cache": {"enabled": False},
        "keys": [{"key": GATEWAY_KEY, "tenant": "team-l"}],
        "providers": {"primary": {"type": "openai", "base_url": f"{primary.url}/v1", "api_key": PRIMARY_KEY}},
        "models": {"gpt": {"deployments": [{"provider": "primary", "model": "m1"}]}},
        "monitoring": {"in_process": True, "interval_s": 0.2, "window_s": 60, "baseline_s": 600,
                       "min_samples": 1},
    })
    try:
        monitor = gw.gateway.monitor
        assert monitor is not None
        oai = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=GATEWAY_KEY, max_retries=0)
        for i in range(3):
            oai.chat.completions.create(model="gpt", messages=[{"role": "user", "content": f"hello {i}"}])
        assert gw.gateway.telemetry.flush(timeout_s=10)

        def scraped(name: str, **labels: str) -> float | None:
            """The sample's value in the gateway's /metrics, None when there is no such series."""
            for family in text_string_to_metric_families(httpx.get(f"{gw.url}/metrics").text):
                for sample in family.samples:
                    if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                        return sample.value
            return None

        # no baseline traffic yet: the row is there, not alerting, and says why (drift_metrics.note)
        assert _wait(lambda: scraped("sluice_drift_alerting", metric="error_rate", public_model="gpt") == 0, 20)
        assert scraped("sluice_drift_threshold", metric="error_rate", public_model="gpt") is not None
        assert scraped("sluice_monitor_runs_total", outcome="ok") >= 1
        assert scraped("sluice_monitor_leader") == 1
        assert monitor.runs_failed == 0
        assert FileLock(data_dir / "monitor.lock").acquire() is False   # held by the gateway's loop
    finally:
        gw.stop()
        ch.command(f"DROP DATABASE IF EXISTS `{database}`")
    assert monitor._thread is None
    assert FileLock(data_dir / "monitor.lock").acquire()                # released at shutdown
