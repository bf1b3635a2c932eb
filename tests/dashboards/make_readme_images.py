"""Regenerate docs/img/dashboard-*.png: `python -m tests.dashboards.make_readme_images [minutes]`.

Runs the mock providers and a gateway (embedded chDB in a temporary directory), drives the
same traffic mix as the tests for a few minutes with a ramp and an error burst, adds drift
monitor rows, renders the traffic, cost and quality dashboards and copies a few panels."""

from __future__ import annotations

import random
import shutil
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import openai

from dashboards.render import render
from telemetry.clickhouse import open_client
from tests.dashboards.conftest import KEYS, dashboard_config, send_traffic
from tests.gateway_server import start_gateway
from tests.mock_server import start_mock
from tests.conftest import BACKUP_KEY, PRIMARY_KEY

PICKED = {
    "traffic/requests-s-by-public-model.png": "dashboard-traffic-requests.png",
    "traffic/latency-p50-p95-p99.png": "dashboard-traffic-latency.png",
    "cost/cost-by-public-model.png": "dashboard-cost-by-model.png",
    "cost/cost-by-tenant.png": "dashboard-cost-by-tenant.png",
    "quality/refusals-empty-answers-json-validity.png": "dashboard-quality-refusals.png",
    "quality/latest-value-per-segment.png": "dashboard-quality-latest.png",
}


def _drift_rows(ch, database: str, start: datetime, end: datetime) -> None:
    from telemetry.drift_tables import DRIFT_COLUMNS, EVENT_COLUMNS, DriftRow, ModelEvent
    rows, ts, k = [], start, 0
    while ts <= end:
        refusal = 0.02 + (0.18 if ts > start + (end - start) / 2 else 0.0) + random.uniform(0, 0.01)
        auc = 0.51 + random.uniform(0, 0.02) + (0.1 if ts > start + (end - start) * 0.6 else 0.0)
        for metric, value, threshold, base in (("refusal_rate", refusal, 0.07, 0.02),
                                               ("json_valid_rate", 0.97 - random.uniform(0, 0.02), 0.9, 0.97),
                                               ("empty_answer_rate", 0.01 + random.uniform(0, 0.01), 0.05, 0.01),
                                               ("prompt_embedding_auc", auc, 0.55, 0.5)):
            crossed = int(value > threshold if metric != "json_valid_rate" else value < threshold)
            rows.append(DriftRow(ts, ts - timedelta(hours=1), ts, ts - timedelta(days=7), ts - timedelta(hours=1),
                                 "gpt", "primary/m1", "team-a", "fp1", metric, "rate", value, base, threshold,
                                 crossed, int(crossed and k > 0), 400, 5000, "").as_row())
        ts += timedelta(seconds=30)
        k += 1
    ch.insert("drift_metrics", rows, column_names=list(DRIFT_COLUMNS), database=database)
    mid = start + (end - start) / 2
    ch.insert("model_events", [ModelEvent(mid, "gpt", "primary/m1", "team-a", "system_fingerprint", "fp_a1",
                                          "fp_b7", mid, 120, 1).as_row()],
              column_names=list(EVENT_COLUMNS), database=database)


def main(minutes: float = 6.0) -> int:
    work = Path(tempfile.mkdtemp(prefix="sluice-readme-"))
    url = f"chdb://{work / 'clickhouse'}"
    p_url, stop_p = start_mock(api_key=PRIMARY_KEY)
    b_url, stop_b = start_mock(api_key=BACKUP_KEY)
    gw = start_gateway(dashboard_config(p_url, b_url, url, "sluice"))
    start = datetime.now(timezone.utc)
    deadline = time.monotonic() + minutes * 60
    busy = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=KEYS["team-b"], max_retries=0)
    while time.monotonic() < deadline:
        progress = 1 - (deadline - time.monotonic()) / (minutes * 60)
        send_traffic(gw.url)
        for _ in range(int(6 * progress)):              # a ramp of team-b on claude
            try:
                busy.chat.completions.create(model="claude", messages=[{"role": "user", "content": "more"}])
            except openai.APIError:
                pass
        if 0.4 < progress < 0.6:                        # an error burst
            for _ in range(4):
                try:
                    busy.chat.completions.create(model="broken", messages=[{"role": "user", "content": "x"}])
                except openai.APIError:
                    pass
        time.sleep(0.5)
    gw.gateway.telemetry.flush(timeout_s=10)
    end = datetime.now(timezone.utc)
    ch = open_client(url)                               # the same engine, in this process
    _drift_rows(ch, "sluice", start, end)
    out = work / "render"
    render(ch, "sluice", out, since=timedelta(minutes=minutes + 2), only=("traffic", "cost", "quality"))
    img = Path(__file__).resolve().parents[2] / "docs" / "img"
    img.mkdir(parents=True, exist_ok=True)
    for src, dst in PICKED.items():
        shutil.copy(out / src, img / dst)
        print(f"docs/img/{dst}")
    gw.stop()
    stop_p()
    stop_b()
    return 0


if __name__ == "__main__":
    sys.exit(main(float(sys.argv[1]) if len(sys.argv) > 1 else 6.0))
