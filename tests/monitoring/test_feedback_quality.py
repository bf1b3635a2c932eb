"""Quality in the drift runner and `sluice report quality`, on chDB: a drop in the thumbs-up
rate or in an evaluator's mean score alerts like any drift metric (after `alert_after_runs`
crossings), a stable one does not, and the report prints scores, feedback rates and
judge-vs-human agreement.

Rows go into `llm_requests`, `feedback` and `evaluations` directly, at exact counts and
times: what is tested is what the runner and the report do with them (the rows' way in
through a gateway is tests/gateway/test_feedback_endpoint.py).
"""

from __future__ import annotations

import itertools
import random
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from monitoring.config import MonitoringConfig
from telemetry.evaluations import EVALUATION_COLUMNS, EvaluationRow
from monitoring.feedback_report import quality_report
from monitoring.metrics import MonitorMetrics
from monitoring.runner import run_once
from telemetry.feedback import FEEDBACK_COLUMNS, FeedbackRow
from telemetry.schema import migrate

_db = itertools.count()
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
REQUEST_COLUMNS = ["timestamp", "request_id", "trace_id", "operation", "public_model", "deployment", "tenant",
                   "prompt_fingerprint", "status_code", "latency_ms", "completion_text", "prompt_text",
                   "finish_reason", "stream", "cache_status"]


@pytest.fixture
def db(ch):
    name = f"quality_{next(_db)}"
    migrate(ch, name, ttl_days=0)
    yield name
    ch.command(f"DROP DATABASE IF EXISTS `{name}`")


def requests(ch, db: str, start: datetime, seconds: float, n: int, tag: str, stream: bool = False) -> list[str]:
    ids, rows = [], []
    for i in range(n):
        rid = f"{tag}-{i}"
        ids.append(rid)
        rows.append([start + timedelta(seconds=seconds * i / n), rid, f"{i:032x}", "chat", "gpt", "dep-gpt", "team",
                     "fp1", 200, 100.0, "Paris is the capital.", "user: capital of France?", "stop", stream, "miss"])
    ch.insert(f"{db}.llm_requests", rows, column_names=REQUEST_COLUMNS)
    return ids


def ratings(ch, db: str, ids: list[str], start: datetime, seconds: float, positive_share: float, seed: int = 0,
            source: str = "explicit", kind: str = "rating") -> None:
    rng = random.Random(seed)
    rows = []
    for i, rid in enumerate(ids):
        rated = source == "explicit" or kind == "regenerate"
        score = (1.0 if rng.random() < positive_share else 0.0) if rated else None
        rows.append(FeedbackRow(ts=start + timedelta(seconds=seconds * i / len(ids)), feedback_id=f"f-{rid}-{kind}",
                                request_id=rid, trace_id="", tenant="team", key_id="k", user="u", source=source,
                                kind=kind, score=score, comment="meh" if score == 0.0 else "", correction="",
                                public_model="gpt", deployment="dep-gpt", prompt_fingerprint="fp1").as_row())
    ch.insert(f"{db}.feedback", rows, column_names=list(FEEDBACK_COLUMNS))


def evaluations(ch, db: str, ids: list[str], start: datetime, seconds: float, mean: float, evaluator: str = "grounding",
                seed: int = 0) -> None:
    rng = random.Random(seed)
    rows = []
    for i, rid in enumerate(ids):
        score = min(1.0, max(0.0, rng.gauss(mean, 0.08)))
        rows.append(EvaluationRow(ts=start + timedelta(seconds=seconds * i / len(ids)), request_id=rid, trace_id="",
                                  public_model="gpt", deployment="dep-gpt", tenant="team", prompt_fingerprint="fp1",
                                  evaluator=evaluator, evaluator_id="e1", score=score,
                                  label="supported" if score >= 0.5 else "unsupported", details="{}", latency_ms=3.0,
                                  cost_usd=0.0).as_row())
    ch.insert(f"{db}.evaluations", rows, column_names=list(EVALUATION_COLUMNS))


def cfg(**extra) -> MonitoringConfig:
    return MonitoringConfig(**{"window_s": 60, "baseline_s": 600, "min_samples": 30, "alert_after_runs": 2,
                               "event_kinds": [], **extra})


def quality(result, name: str):
    found = [m for m in result.metrics if m.metric == name]
    return found[0] if found else None


def history(ch, db: str, *, positive_now: float, grounding_now: float) -> None:
    """A 10-minute baseline (80% thumbs up, grounding 0.85) and a 1-minute window."""
    base = requests(ch, db, NOW - timedelta(seconds=660), 590, 200, "base")
    ratings(ch, db, base, NOW - timedelta(seconds=660), 590, 0.8, seed=1)
    evaluations(ch, db, base, NOW - timedelta(seconds=660), 590, 0.85, seed=2)
    cur = requests(ch, db, NOW - timedelta(seconds=59), 58, 100, "cur")
    ratings(ch, db, cur, NOW - timedelta(seconds=59), 58, positive_now, seed=3)
    evaluations(ch, db, cur, NOW - timedelta(seconds=59), 58, grounding_now, seed=4)


def test_a_drop_in_thumbs_up_and_grounding_alerts_after_consecutive_runs(ch, db):
    history(ch, db, positive_now=0.4, grounding_now=0.55)
    first = run_once(ch, db, cfg(), now=NOW - timedelta(seconds=5))
    second = run_once(ch, db, cfg(), now=NOW)
    for name in ("feedback_positive_rate", "eval_grounding_score"):
        a, b = quality(first, name), quality(second, name)
        assert a.crossed and not a.alerting, (name, a)
        assert b.crossed and b.alerting, (name, b)
        assert b.value < b.threshold < b.baseline
    rate = quality(second, "feedback_positive_rate")
    assert rate.value == pytest.approx(0.4, abs=0.12) and rate.baseline == pytest.approx(0.8, abs=0.08)
    assert rate.n_current == 100 and rate.n_baseline == 200
    stored = ch.query(f"SELECT metric, alerting FROM {db}.drift_metrics WHERE ts = %(ts)s AND metric IN "
                      f"('feedback_positive_rate', 'eval_grounding_score')",
                      parameters={"ts": NOW.replace(tzinfo=None)}).result_rows
    assert sorted(stored) == [("eval_grounding_score", 1), ("feedback_positive_rate", 1)]
    # and the gauges the monitor exports (bounded labels: metric, model, deployment)
    registry = CollectorRegistry()
    MonitorMetrics(registry).observe(second)
    text = generate_latest(registry).decode()
    for name in ("feedback_positive_rate", "eval_grounding_score"):
        line = next(line for line in text.splitlines()
                    if line.startswith("sluice_drift_alerting{") and f'metric="{name}"' in line)
        assert 'public_model="gpt"' in line and line.endswith(" 1.0") and "fp1" not in line


def test_stable_quality_does_not_cross(ch, db):
    history(ch, db, positive_now=0.8, grounding_now=0.85)
    for k in range(3):
        result = run_once(ch, db, cfg(), now=NOW + timedelta(seconds=k))
        for name in ("feedback_positive_rate", "eval_grounding_score"):
            row = quality(result, name)
            assert row is not None and not row.crossed, row


def test_segments_without_feedback_or_evaluations_get_no_quality_rows(ch, db):
    requests(ch, db, NOW - timedelta(seconds=660), 590, 60, "base")
    requests(ch, db, NOW - timedelta(seconds=59), 58, 60, "cur")
    result = run_once(ch, db, cfg(), now=NOW)
    assert result.metrics and not any(m.metric.startswith(("eval_", "feedback_")) for m in result.metrics)


def test_a_small_window_of_ratings_does_not_alert(ch, db):
    base = requests(ch, db, NOW - timedelta(seconds=660), 590, 200, "base")
    ratings(ch, db, base, NOW - timedelta(seconds=660), 590, 0.8)
    cur = requests(ch, db, NOW - timedelta(seconds=59), 58, 100, "cur")
    ratings(ch, db, cur[:5], NOW - timedelta(seconds=59), 58, 0.0)           # 5 thumbs down
    row = quality(run_once(ch, db, cfg(alert_after_runs=1), now=NOW), "feedback_positive_rate")
    assert row.value == 0.0 and not row.crossed and "min_samples" in row.note


def test_the_quality_report_prints_scores_feedback_and_agreement(ch, db):
    ids = requests(ch, db, NOW - timedelta(seconds=600), 500, 40, "r", stream=True)
    evaluations(ch, db, ids, NOW - timedelta(seconds=600), 500, 0.8, evaluator="judge")
    evaluations(ch, db, ids, NOW - timedelta(seconds=600), 500, 0.7, evaluator="grounding")
    ratings(ch, db, ids[:20], NOW - timedelta(seconds=600), 500, 0.9, seed=5)
    ratings(ch, db, ids[20:30], NOW - timedelta(seconds=600), 500, 0.0, source="implicit", kind="regenerate")
    ratings(ch, db, ids[30:34], NOW - timedelta(seconds=600), 500, 0.0, source="implicit", kind="abandon")
    text = quality_report(ch, db, now=NOW, since=timedelta(hours=1))
    print(text)
    lines = text.splitlines()
    split = next(i for i, line in enumerate(lines) if line.startswith("judge vs human"))
    scores, agreement = lines[:split], lines[split:]
    [judge] = [line for line in scores if line.startswith("judge ")]
    assert "gpt" in judge and "dep-gpt" in judge and " 40 " in judge and "0.0%" in judge    # none under 0.5
    [feedback] = [line for line in scores if line.startswith("gpt ") and "(" in line]
    assert " 20 " in feedback and "10 (25.0%)" in feedback and "4 (10.0%)" in feedback
    positive = feedback.split()[4]                                      # e.g. 75.0%
    # the judge passed every answer: it agrees with the humans exactly on their thumbs up
    [judged] = [line for line in agreement[1:] if line.startswith("judge ")]
    assert judged.split()[1:3] == ["20", positive]
    assert any(line.startswith("grounding ") for line in agreement)


def test_the_quality_report_on_an_empty_database(ch, db):
    text = quality_report(ch, db, now=NOW)
    assert "evaluator scores" in text and text.count("none") >= 2 and "none yet" in text


def test_sluice_report_quality_cli(ch, db, chdb_url, tmp_path):
    """The command line on a ClickHouse it opens itself (here: chDB in a fresh directory)."""
    config = tmp_path / "sluice.yaml"
    config.write_text(f"data_dir: {tmp_path / 'data'}\ntelemetry: {{database: cli_quality}}\n")
    proc = subprocess.run([sys.executable, "-m", "gateway.cli", "report", "quality", "--config", str(config),
                           "--since", "2d"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "evaluator scores (evaluations):" in proc.stdout and "judge vs human agreement" in proc.stdout
