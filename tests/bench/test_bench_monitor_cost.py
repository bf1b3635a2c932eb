"""bench/monitor_cost.py's generated traffic is what it claims (segments, current share,
embeddings on a sample, the planted shifts), and the real runner runs over it (and sees the
planted fingerprint change)."""

from __future__ import annotations

from datetime import datetime, timezone

from bench.monitor_cost import DEPLOYMENTS, TENANTS, generate_sql
from monitoring.config import MonitoringConfig
from monitoring.runner import run_once
from telemetry.schema import migrate


def test_generated_rows_have_the_segments_and_shifts_the_bench_describes(ch):
    database = "bench_monitor_cost"
    migrate(ch, database)
    try:
        now = datetime.now(timezone.utc)
        ch.command(generate_sql(20000, 0, now, database))
        stats = ch.query(f"""
SELECT count(), uniqExact(public_model, deployment, tenant, prompt_fingerprint),
       countIf(timestamp >= now64(3) - INTERVAL 1 HOUR) / count(),
       countIf(length(prompt_embedding) = 384) / countIf(operation = 'chat'),
       countIf(response_format = 'json_schema') / count(), uniqExact(tenant), uniqExact(deployment)
FROM `{database}`.llm_requests""").result_rows[0]
        assert stats[0] == 20000
        assert stats[1] == len({d[1] for d in DEPLOYMENTS}) * len(TENANTS) * 2
        assert 0.07 < stats[2] < 0.13 and 0.07 < stats[3] < 0.13 and 0.07 < stats[4] < 0.13
        assert (stats[5], stats[6]) == (len(TENANTS), len(DEPLOYMENTS))

        cfg = MonitoringConfig(min_samples=10, text_sample=20, embedding_sample=20,
                               metrics={"prompt_embedding_auc": {"enabled": False}})
        result = run_once(ch, database, cfg, now=now)
        assert result.segments == stats[1]
        changed = {(e.deployment, e.new_value) for e in result.events if e.kind == "system_fingerprint"}
        assert ("openai/gpt-4o", "fp_new_build") in changed
        ratios = dict(ch.query(f"""
SELECT public_model, avgIf(output_tokens, timestamp >= now64(3) - INTERVAL 1 HOUR)
                     / avgIf(output_tokens, timestamp < now64(3) - INTERVAL 1 HOUR)
FROM `{database}`.llm_requests WHERE status_code = 200 GROUP BY public_model""").result_rows)
        assert 1.6 < ratios["llama-70b"] < 2.4                             # answers twice as long now
        assert all(0.8 < v < 1.25 for k, v in ratios.items() if k != "llama-70b")
    finally:
        ch.command(f"DROP DATABASE IF EXISTS `{database}`")
