"""`open_trace_store`: the monitor's way to the traces. Through a running gateway's collector
when it owns the embedded chDB (a real gateway, real collector process, real chDB), directly
when chDB is free, and a clear error when a `writer: thread` gateway holds it."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import openai
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from monitoring.store import (
    CollectorTraceClient,
    TraceStoreUnavailable,
    in_process_store,
    open_trace_store,
)
from telemetry.config import TelemetryConfig
from telemetry.schema import CURRENT_VERSION, current_version
from tests.conftest import PRIMARY_KEY
from tests.gateway_server import start_gateway

GATEWAY_KEY = "sluice-store-test-secret"


@pytest.fixture(scope="module")
def collector_gateway(primary, tmp_path_factory):
    """A gateway on the embedded default: its collector process owns <data>/clickhouse."""
    data_dir = tmp_path_factory.mktemp("store") / "data"
    gw = start_gateway({
        "data_dir": str(data_dir),
        # normal priority: at SCHED_IDLE a collector gets no CPU on a saturated test machine
        "telemetry": {"flush_interval_s": 0.05, "collector_priority": "normal"},
        "cache": {"enabled": False},
        "keys": [{"key": GATEWAY_KEY, "tenant": "team-s"}],
        "providers": {"primary": {"type": "openai", "base_url": f"{primary.url}/v1", "api_key": PRIMARY_KEY}},
        "models": {"gpt": {"deployments": [{"provider": "primary", "model": "m1"}]}},
    })
    yield gw, data_dir
    gw.stop()


def test_reads_and_writes_go_through_the_gateways_collector(collector_gateway):
    gw, data_dir = collector_gateway
    oai = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=GATEWAY_KEY, max_retries=0)
    oai.chat.completions.create(model="gpt", messages=[{"role": "system", "content": "Be terse."},
                                                       {"role": "user", "content": "hello store"}])
    assert gw.gateway.telemetry.flush(timeout_s=10)

    client, database = open_trace_store(TelemetryConfig(), data_dir)
    try:
        assert isinstance(client, CollectorTraceClient)      # chDB is the collector's: no second opener
        assert database == "sluice" and current_version(client, database) == CURRENT_VERSION
        result = client.query(f"SELECT tenant, prompt_fingerprint, prompt_text FROM `{database}`.llm_requests "
                              f"WHERE tenant = %(t)s", parameters={"t": "team-s"})
        assert result.column_names == ("tenant", "prompt_fingerprint", "prompt_text")
        [row] = list(result.named_results())
        assert row["tenant"] == "team-s" and len(row["prompt_fingerprint"]) == 16
        assert "hello store" in row["prompt_text"]

        client.command(f"CREATE TABLE IF NOT EXISTS `{database}`.store_probe (ts DateTime64(3, 'UTC'), "
                       f"name String, values Array(Float32)) ENGINE = MergeTree ORDER BY ts")
        now = datetime.now(timezone.utc).replace(microsecond=0)
        client.insert("store_probe", ((now, f"n{i}", [0.5, float(i)]) for i in range(3)),
                      column_names=["ts", "name", "values"], database=database)
        back = client.query(f"SELECT ts, name, values FROM `{database}`.store_probe ORDER BY name").result_rows
        # naive UTC back, as clickhouse-connect's own client returns it
        assert [(r[0], r[1], list(r[2])) for r in back] == \
            [(now.replace(tzinfo=None), f"n{i}", [0.5, float(i)]) for i in range(3)]
        assert int(client.command(f"SELECT count() FROM `{database}`.store_probe")) == 3

        # embeddings travel as float32 arrays (half the bytes of a list of floats), values intact
        [(vector,)] = client.query("SELECT [toFloat32(0.5), -1.25, 3] AS e").result_rows
        assert len(vector) == 3 and np.asarray(vector, dtype=np.float32).tolist() == [0.5, -1.25, 3.0]

        with pytest.raises(DatabaseError, match="no_such_table"):
            client.query(f"SELECT * FROM `{database}`.no_such_table")
        assert client.query("SELECT 1").result_rows == [(1,)]  # the connection survives an error
        with pytest.raises(DatabaseError, match="unsupported"):
            client.query("SELECT 1", external_data=object())
    finally:
        client.close()


def test_in_process_store_of_a_collector_gateway_is_the_proxy(collector_gateway):
    gw, data_dir = collector_gateway
    client, database = in_process_store(gw.gateway.telemetry, data_dir)
    try:
        assert isinstance(client, CollectorTraceClient) and database == "sluice"
        assert client.query(f"SELECT count() FROM `{database}`.llm_requests").result_rows[0][0] >= 1
    finally:
        client.close()


def test_a_free_chdb_is_opened_directly(ch, chdb_url, tmp_path):
    # This process holds the session's chDB: opening that path again is "free" here.
    database = "monitor_store_direct"
    try:
        client, db = open_trace_store(TelemetryConfig(clickhouse_url=chdb_url, database=database), tmp_path)
        assert not isinstance(client, CollectorTraceClient) and db == database
        assert current_version(client, database) == CURRENT_VERSION
    finally:
        ch.command(f"DROP DATABASE IF EXISTS `{database}`")


def test_a_chdb_held_without_a_collector_says_what_to_do(ch, tmp_path):
    # chDB admits one directory per process: this one holds the session's, as a gateway
    # running writer: thread holds its own. No collector socket in the data dir.
    with pytest.raises(TraceStoreUnavailable, match="monitoring.in_process: true"):
        open_trace_store(TelemetryConfig(), tmp_path / "other")


def test_sluice_monitor_run_once_while_the_gateway_holds_the_embedded_chdb(collector_gateway, tmp_path, primary):
    """A monitor in its own process: chDB is the gateway collector's, so every query and the
    drift rows go through the collector; the gateway keeps serving meanwhile."""
    gw, data_dir = collector_gateway
    oai = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=GATEWAY_KEY, max_retries=0)
    for i in range(3):
        oai.chat.completions.create(model="gpt", messages=[{"role": "user", "content": f"count {i}"}])
    assert gw.gateway.telemetry.flush(timeout_s=10)
    config = tmp_path / "sluice.yaml"
    config.write_text(
        f"data_dir: {data_dir}\n"
        f"providers:\n  primary: {{type: openai, base_url: '{primary.url}/v1', api_key: x}}\n"
        f"models:\n  gpt: {{deployments: [{{provider: primary, model: m1}}]}}\n"
        "monitoring: {window_s: 600, baseline_s: 3600, min_samples: 1}\n")
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "monitor", "run", "--once", "--config", str(config)],
                          capture_output=True, text=True, timeout=180, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert re.search(r"drift run: [12] segments", done.stdout), done.stdout   # 2: the prompt with a system message
    assert "through the gateway's collector" in done.stderr

    client, database = open_trace_store(TelemetryConfig(), data_dir)
    try:
        rows = client.query(f"SELECT metric, public_model, n_current FROM `{database}`.drift_metrics "
                            f"WHERE public_model = 'gpt' AND metric = 'error_rate'").result_rows
        assert rows and max(r[2] for r in rows) >= 3        # the 3 requests without a system prompt
        events = client.query(f"SELECT kind, new_value FROM `{database}`.model_events").result_rows
        assert {("response_model", "m1"), ("system_fingerprint", "fp_mock")} <= set(events)   # first seen
    finally:
        client.close()
    oai.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "still serving"}])
