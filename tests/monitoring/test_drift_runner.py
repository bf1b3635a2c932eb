"""The runner's mechanics on chDB: the min_samples gate, alert_after_runs streaks read back
from drift_metrics, pinned baselines, events (first values, changes, no repeats), an older
schema, and the CLI (`sluice monitor run --once`, `monitor baseline set`, `report drift`).

Rows are inserted into `llm_requests` directly: these tests are about what the runner does
with rows, at exact counts and times (the detection of real shifts through a gateway is
test_drift_detection.py).
"""

from __future__ import annotations

import itertools
import random
from datetime import datetime, timedelta, timezone

import pytest
import yaml

from monitoring.config import MonitoringConfig
from monitoring.runner import run_once
from monitoring.segments import Segment, parse_segment
from monitoring.windows import Range, pin_baseline
from telemetry.schema import migrate

_db = itertools.count()
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
COLUMNS = ["timestamp", "request_id", "operation", "public_model", "deployment", "tenant", "prompt_fingerprint",
           "status_code", "latency_ms", "input_tokens", "output_tokens", "completion_text", "prompt_text",
           "finish_reason", "response_model", "system_fingerprint", "response_format", "cache_status"]
WORDS = "the soup needs more salt and a little pepper before you serve it warm with fresh bread".split()


@pytest.fixture
def db(ch):
    name = f"runner_{next(_db)}"
    migrate(ch, name, ttl_days=0)          # NOW is a fixed date: no TTL to drop its rows
    yield name
    ch.command(f"DROP DATABASE IF EXISTS `{name}`")


def insert(ch, db: str, start: datetime, seconds: float, n: int, *, model: str = "gpt", fingerprint: str = "fp1",
           latency: float = 100.0, response_model: str = "m1", system_fingerprint: str = "fp_a",
           tenant: str = "team", seed: int = 0, **overrides) -> None:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 14)))
        row = {"timestamp": start + timedelta(seconds=seconds * i / n), "request_id": f"{seed}-{i}-{rng.random()}",
               "operation": "chat", "public_model": model, "deployment": f"dep-{model}", "tenant": tenant,
               "prompt_fingerprint": fingerprint, "status_code": 200, "latency_ms": latency * rng.uniform(0.9, 1.1),
               "input_tokens": rng.randint(10, 20), "output_tokens": len(text.split()), "completion_text": text,
               "prompt_text": "user: how do I make soup", "finish_reason": "stop", "response_model": response_model,
               "system_fingerprint": system_fingerprint, "response_format": "", "cache_status": "miss", **overrides}
        rows.append([row[c] for c in COLUMNS])
    ch.insert(f"{db}.llm_requests", rows, column_names=COLUMNS)


def cfg(**extra) -> MonitoringConfig:
    return MonitoringConfig(**{"window_s": 60, "baseline_s": 600, "min_samples": 30, "alert_after_runs": 2,
                               **extra})


def metric(result, name: str, model: str = "gpt"):
    (row,) = [m for m in result.metrics if m.metric == name and m.public_model == model]
    return row


def test_below_min_samples_the_value_is_written_but_never_alerts(ch, db):
    insert(ch, db, NOW - timedelta(seconds=600), 540, 200)
    insert(ch, db, NOW - timedelta(seconds=60), 59, 10, latency=900, seed=1)       # slow, but only 10
    result = run_once(ch, db, cfg(alert_after_runs=1), now=NOW)
    row = metric(result, "latency_p95_ms")
    assert row.value > 800 and row.baseline < 120 and row.n_current == 10 and row.n_baseline == 200
    assert not row.crossed and not row.alerting and "n_current 10 < min_samples 30" in row.note
    stored = ch.query(f"SELECT value, alerting, note FROM {db}.drift_metrics WHERE metric = 'latency_p95_ms'")
    assert stored.result_rows[0][0] == pytest.approx(row.value) and stored.result_rows[0][1] == 0


def test_an_alert_needs_consecutive_crossings_read_back_from_drift_metrics(ch, db):
    insert(ch, db, NOW - timedelta(seconds=900), 840, 2000)
    insert(ch, db, NOW - timedelta(seconds=60), 120, 100, latency=600, seed=1)       # slow from NOW - 60 s
    config = cfg(alert_after_runs=3)
    streak = []
    for k in range(3):                  # three runs 20 s apart; the runner keeps no state between them
        row = metric(run_once(ch, db, config, now=NOW + timedelta(seconds=20 * k)), "latency_p95_ms")
        streak.append((row.crossed, row.alerting))
    assert streak == [(1, 0), (1, 0), (1, 1)]
    assert "alerting after 3 runs in a row" in ch.query(
        f"SELECT note FROM {db}.drift_metrics WHERE metric = 'latency_p95_ms' ORDER BY ts LIMIT 1").result_rows[0][0]
    # A run that does not cross (here: gated by min_samples) breaks the streak.
    row = metric(run_once(ch, db, cfg(alert_after_runs=3, min_samples=10_000), now=NOW + timedelta(seconds=45)),
                 "latency_p95_ms")
    assert not row.crossed
    row = metric(run_once(ch, db, config, now=NOW + timedelta(seconds=50)), "latency_p95_ms")
    assert row.crossed and not row.alerting


def test_a_pinned_baseline_replaces_the_rolling_one_for_matching_segments(ch, db):
    # Latency was 100 ms long ago, 600 ms for the last ten minutes: the rolling baseline
    # (the ten minutes before the window) already says 600, the pinned one says 100.
    insert(ch, db, NOW - timedelta(hours=2), 600, 200)
    insert(ch, db, NOW - timedelta(seconds=660), 660, 800, latency=600, seed=1)
    insert(ch, db, NOW - timedelta(hours=2), 600, 200, model="other", seed=2)
    insert(ch, db, NOW - timedelta(seconds=660), 660, 800, model="other", latency=600, seed=3)
    rolling = metric(run_once(ch, db, cfg(alert_after_runs=1), now=NOW), "latency_p95_ms")
    assert not rolling.crossed and rolling.baseline > 500
    pin_baseline(ch, db, parse_segment("public_model=gpt"), Range(NOW - timedelta(hours=2), NOW - timedelta(hours=1)),
                 now=NOW)
    result = run_once(ch, db, cfg(alert_after_runs=1), now=NOW + timedelta(seconds=1))
    pinned = metric(result, "latency_p95_ms")
    assert pinned.crossed and pinned.alerting and pinned.baseline < 120 and "pinned baseline" in pinned.note
    assert pinned.baseline_start == NOW - timedelta(hours=2) and pinned.n_baseline == 200
    assert not metric(result, "latency_p95_ms", "other").crossed          # "other" keeps the rolling one
    pin_baseline(ch, db, parse_segment("model=gpt"), Range(NOW, NOW), now=NOW + timedelta(seconds=2), active=False)
    assert not metric(run_once(ch, db, cfg(), now=NOW + timedelta(seconds=3)), "latency_p95_ms").crossed


def test_events_first_values_changes_and_no_repeats(ch, db):
    insert(ch, db, NOW - timedelta(seconds=600), 500, 100)
    first = run_once(ch, db, cfg(), now=NOW).events
    assert sorted((e.kind, e.old_value, e.new_value, e.alerting) for e in first) == [
        ("prompt_fingerprint", "", "fp1", 0), ("response_model", "", "m1", 0), ("system_fingerprint", "", "fp_a", 0)]
    assert run_once(ch, db, cfg(), now=NOW + timedelta(seconds=10)).events == []
    # The provider swaps the model twice within one window: two chained, alerting events.
    insert(ch, db, NOW + timedelta(seconds=20), 10, 20, response_model="m2", seed=1)
    insert(ch, db, NOW + timedelta(seconds=40), 10, 20, response_model="m3", seed=2)
    changes = run_once(ch, db, cfg(), now=NOW + timedelta(seconds=60)).events
    assert [(e.kind, e.old_value, e.new_value, e.alerting, e.requests_since, e.deployment, e.tenant)
            for e in changes] == [("response_model", "m1", "m2", 1, 20, "dep-gpt", ""),
                                  ("response_model", "m2", "m3", 1, 20, "dep-gpt", "")]
    assert changes[0].first_seen == NOW + timedelta(seconds=20)
    stored = ch.query(f"SELECT kind, old_value, new_value, alerting FROM {db}.model_events ORDER BY first_seen, "
                      f"kind").result_rows
    assert len(stored) == 5 and stored[-1] == ("response_model", "m2", "m3", 1)


def test_the_evaluators_own_calls_are_not_user_traffic(ch, db):
    insert(ch, db, NOW - timedelta(seconds=600), 500, 100)
    insert(ch, db, NOW - timedelta(seconds=50), 40, 100, response_model="judge-model", latency=5000, seed=1)
    insert(ch, db, NOW - timedelta(seconds=50), 40, 40, seed=2)
    ch.command(f"ALTER TABLE {db}.llm_requests UPDATE traffic = 'evaluator' WHERE response_model = 'judge-model' "
               f"SETTINGS mutations_sync = 1")
    result = run_once(ch, db, cfg(alert_after_runs=1), now=NOW)
    assert "judge-model" not in {e.new_value for e in result.events}
    row = metric(result, "latency_p95_ms")
    assert row.n_current == 40 and row.value < 200


def test_an_older_schema_without_fingerprint_columns_still_runs(ch):
    name = f"runner_old_{next(_db)}"
    migrate(ch, name, ttl_days=0, target=7)
    from telemetry.drift_tables import drift_tables_sql
    for sql in drift_tables_sql(name, 0):
        ch.command(sql)
    try:
        cols = [c for c in COLUMNS if c not in ("prompt_fingerprint", "response_format")]
        rows = [[NOW - timedelta(seconds=s), f"r{s}", "chat", "gpt", "d", "t", 200, 50.0, 10, 12, "fine answer text",
                 "user: q", "stop", "m1", "fp", "miss"] for s in range(1, 300)]
        ch.insert(f"{name}.llm_requests", rows, column_names=cols)
        result = run_once(ch, name, cfg(), now=NOW)
        assert {m.prompt_fingerprint for m in result.metrics} == {""}
        assert "no response_format requests" in metric(result, "json_valid_rate").note
        assert {e.kind for e in result.events} == {"response_model", "system_fingerprint"}
    finally:
        ch.command(f"DROP DATABASE IF EXISTS `{name}`")


def test_segments_parse_and_bad_ones_name_the_part():
    assert parse_segment("public_model=gpt, tenant=team-a") == Segment("gpt", "", "team-a", "")
    assert parse_segment("fingerprint=abc") == Segment("", "", "", "abc")
    with pytest.raises(ValueError, match="colour=red"):
        parse_segment("public_model=gpt,colour=red")


def test_cli_run_once_baseline_set_and_report_drift(ch, chdb_url, tmp_path, capsys):
    from gateway.cli import main
    database = f"cli_{next(_db)}"
    config = tmp_path / "sluice.yaml"
    config.write_text(yaml.safe_dump({
        "data_dir": str(tmp_path / "data"),
        "telemetry": {"clickhouse_url": chdb_url, "database": database},
        "monitoring": {"window_s": 600, "baseline_s": 3600, "min_samples": 30, "alert_after_runs": 1},
    }))
    migrate(ch, database)
    now = datetime.now(timezone.utc)
    insert(ch, database, now - timedelta(seconds=3000), 2000, 300)
    insert(ch, database, now - timedelta(seconds=500), 400, 100, latency=900, response_model="m2", seed=1)
    try:
        assert main(["monitor", "run", "--once", "--config", str(config)]) == 0
        out = capsys.readouterr().out
        assert "1 segments" in out and "latency_p95_ms" in out and "response_model" in out and "m1 -> m2" in out
        assert main(["report", "drift", "--config", str(config)]) == 0
        report = capsys.readouterr().out
        assert "ALERT" in report and "gpt/dep-gpt/team/fp1" in report and "m1" in report and "m2" in report
        assert main(["report", "drift", "--alerting", "--config", str(config)]) == 0
        alerting = capsys.readouterr().out
        assert "latency_p95_ms" in alerting and "json_valid_rate" not in alerting
        assert main(["monitor", "baseline", "set", "--segment", "public_model=gpt", "--config", str(config)]) == 0
        assert "pinned" in capsys.readouterr().out
        assert ch.command(f"SELECT count() FROM `{database}`.drift_baselines WHERE public_model = 'gpt'") == 1
        assert main(["monitor", "baseline", "set", "--segment", "model", "--config", str(config)]) == 2
    finally:
        ch.command(f"DROP DATABASE IF EXISTS `{database}`")
