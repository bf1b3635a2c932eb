"""The evaluators run by the monitor's job: inside `sluice serve` (monitoring.in_process)
on the loop's schedule after each drift run, and once by `MonitorJob` directly."""

from __future__ import annotations

import itertools
import time

import openai
import pytest

from monitoring.config import MonitoringConfig
from monitoring.evaluators.job import MonitorJob
from tests.conftest import PRIMARY_KEY
from tests.gateway_server import start_gateway

_n = itertools.count()
KEY = "sluice-eval-job-secret"
CONTEXT = "The Glacier Express runs between Zermatt and St. Moritz and takes about 8 hours."


def _count(ch, database: str, evaluator: str) -> int:
    return ch.query(f"SELECT count() FROM `{database}`.evaluations WHERE evaluator = {{e:String}}",
                    parameters={"e": evaluator}).result_rows[0][0]


def test_the_in_process_monitor_runs_the_evaluators_after_its_drift_runs(primary, chdb_url, ch, tmp_path,
                                                                         model_cache_dir):
    database = f"eval_job_{next(_n)}"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "models").symlink_to(model_cache_dir)      # the ONNX export, made once per session
    gw = start_gateway({
        "data_dir": str(tmp_path / "data"),
        "telemetry": {"clickhouse_url": chdb_url, "database": database, "flush_interval_s": 0.05,
                      "writer": "thread"},
        "keys": [{"key": KEY, "tenant": "team-j"}],
        "providers": {"primary": {"type": "openai", "base_url": f"{primary.url}/v1", "api_key": PRIMARY_KEY}},
        "models": {"gpt": {"deployments": [{"provider": "primary", "model": "m1"}]}},
        "monitoring": {"in_process": True, "interval_s": 0.3, "window_s": 60, "baseline_s": 600, "min_samples": 1,
                       "evaluators": {"enabled": True, "settle_s": 0,
                                      "grounding": {"sample": {"rate": 1.0}},
                                      "assertions": [{"name": "not-empty", "min_chars": 1}]}},
    })
    try:
        client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=KEY, max_retries=0)
        for i in range(3):
            client.chat.completions.create(model="gpt", messages=[
                {"role": "user", "content": f"<context>{CONTEXT}</context> How long is the trip? ({i})"}])
        assert gw.gateway.telemetry.flush(timeout_s=10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (_count(ch, database, "grounding") < 3
                                               or _count(ch, database, "assertion:not-empty") < 3):
            time.sleep(0.1)
        assert _count(ch, database, "grounding") == 3 and _count(ch, database, "assertion:not-empty") == 3
        assert gw.gateway.monitor.runs_failed == 0
        # the mock echoes the prompt ("Mock answer to: <context>..."), context included: supported;
        # the job loaded the local MiniLM from the gateway's data directory for the evaluators
        labels = ch.query(f"SELECT DISTINCT label, JSONExtractString(details, 'backend') "
                          f"FROM `{database}`.evaluations WHERE evaluator = 'grounding'").result_rows
        assert labels == [("supported", "embedding")]
    finally:
        gw.stop()
        ch.command(f"DROP DATABASE IF EXISTS `{database}`")


def test_monitor_job_runs_drift_then_evaluators_and_survives_an_evaluator_failure(ch):
    database = f"eval_job_{next(_n)}"
    from telemetry.schema import migrate
    migrate(ch, database)
    try:
        from datetime import datetime, timedelta, timezone
        ch.insert(f"{database}.llm_requests", [[datetime.now(timezone.utc) - timedelta(seconds=30), "r1", "chat",
                                                 "gpt", 200, "An answer longer than ten characters."]],
                  column_names=["timestamp", "request_id", "operation", "public_model", "status_code",
                                "completion_text"])
        cfg = MonitoringConfig(window_s=60, baseline_s=600, evaluators={
            "enabled": True, "grounding": {"enabled": False},
            "assertions": [{"name": "bad-regex", "regex": "(unclosed"}, {"name": "fine", "max_chars": 10}]})
        job = MonitorJob()
        result = job(ch, database, cfg)                   # ClickHouse rejects the regex: that evaluator fails, logged
        assert result.window is not None                  # the drift run's result is returned all the same
        assert [(o.evaluator, o.errors) for o in job.last_evaluation.outcomes] == [("assertion:bad-regex", 1),
                                                                                   ("assertion:fine", 0)]
        assert _count(ch, database, "assertion:fine") == 1                  # the other evaluator ran: a fail row
        with pytest.raises(ValueError, match="not a valid JSON schema"):
            MonitoringConfig(evaluators={"assertions": [{"name": "x", "json_schema": {"type": "no-such-type"}}]})
        job.close()
    finally:
        ch.command(f"DROP DATABASE IF EXISTS `{database}`")


def test_the_evaluator_key_is_recognised_on_an_open_gateway_and_never_kept_in_plain_text():
    from gateway.auth import ANONYMOUS, EVALUATOR, KeyStore

    store = KeyStore(None, evaluator_key="sk-monitor-open")
    assert not store.enabled and store.checks_keys                 # open gateway: keys not required
    assert store.authenticate([(b"authorization", b"Bearer sk-monitor-open")]) is EVALUATOR
    assert store.authenticate([(b"authorization", b"Bearer anything-else")]) is ANONYMOUS
    assert store.authenticate([]) is ANONYMOUS
    assert "sk-monitor-open" not in repr(vars(store))
    cfg = MonitoringConfig(evaluator_key="sk-monitor-open")
    assert "sk-monitor-open" not in repr(cfg) and "sk-monitor-open" not in cfg.model_dump_json()
