"""Schema creation and migrations on the real ClickHouse engine (chDB)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from telemetry.records import INGEST_COLUMNS, REQUEST_COLUMNS, STORED_REQUEST_COLUMNS
from telemetry.schema import CURRENT_VERSION, current_version, migrate
from telemetry.span_exporter import SPAN_COLUMNS


def _describe(ch, db: str, table: str) -> list[tuple[str, str]]:
    rows = ch.query(f"DESCRIBE TABLE `{db}`.{table}").result_rows
    return [(r[0], r[1]) for r in rows]


def _tables(ch, db: str) -> set[str]:
    return {r[0] for r in ch.query(f"SHOW TABLES FROM `{db}`").result_rows}


def test_fresh_database_is_migrated_to_the_current_version(ch, database):
    assert current_version(ch, database) == 0
    assert migrate(ch, database) == list(range(1, CURRENT_VERSION + 1))
    assert current_version(ch, database) == CURRENT_VERSION
    assert {"otel_traces", "otel_traces_trace_id_ts", "otel_traces_trace_id_ts_mv", "otel_traces_ingest",
            "otel_traces_ingest_mv", "llm_requests", "sluice_schema_migrations"} <= _tables(ch, database)


def test_llm_requests_columns_match_the_record(ch, database):
    migrate(ch, database)
    columns = [name for name, _ in _describe(ch, database, "llm_requests")]
    assert sorted(columns) == sorted(STORED_REQUEST_COLUMNS)
    assert set(REQUEST_COLUMNS) | set(INGEST_COLUMNS) == set(STORED_REQUEST_COLUMNS)


def test_otel_traces_has_the_collector_columns(ch, database):
    migrate(ch, database)
    described = dict(_describe(ch, database, "otel_traces"))
    assert set(SPAN_COLUMNS) <= set(described)
    assert described["Timestamp"] == "DateTime64(9)"
    assert described["Duration"] == "UInt64"
    assert described["SpanName"] == "LowCardinality(String)"
    assert described["SpanAttributes"] == "Map(LowCardinality(String), String)"
    assert described["Events.Timestamp"] == "Array(DateTime64(9))"
    assert described["Links.Attributes"] == "Array(Map(LowCardinality(String), String))"


def test_migrate_is_idempotent(ch, database):
    migrate(ch, database)
    before = _describe(ch, database, "llm_requests")
    assert migrate(ch, database) == []
    assert _describe(ch, database, "llm_requests") == before
    assert current_version(ch, database) == CURRENT_VERSION


def test_migration_from_v1_keeps_rows_and_reaches_the_fresh_schema(ch, database):
    assert migrate(ch, database, target=1) == [1]
    v1_columns = [n for n, _ in _describe(ch, database, "llm_requests")]
    assert "gateway_overhead_ms" not in v1_columns and "prompt_embedding" not in v1_columns
    assert "otel_traces_trace_id_ts" not in _tables(ch, database)
    ts = datetime.now(timezone.utc)   # recent: an old row would fall to the 30-day TTL
    ch.insert("llm_requests", [[ts, "req-old", "m1", 200, 12.5]],
              column_names=["timestamp", "request_id", "public_model", "status_code", "latency_ms"],
              database=database)

    assert migrate(ch, database) == list(range(2, CURRENT_VERSION + 1))

    fresh = database + "_fresh"
    try:
        migrate(ch, fresh)
        # Same columns and types as a database created at the current version.
        assert sorted(_describe(ch, database, "llm_requests")) == \
            sorted(_describe(ch, fresh, "llm_requests"))
    finally:
        ch.command(f"DROP DATABASE IF EXISTS `{fresh}`")
    row = ch.query(
        f"SELECT request_id, latency_ms, gateway_overhead_ms, prompt_embedding, api_format, anomalies, "
        f"ingest_client, ingest_seq FROM `{database}`.llm_requests").result_rows
    assert row == [("req-old", 12.5, None, [], "", {}, "", 0)]
    assert {"otel_traces_trace_id_ts", "otel_traces_ingest", "otel_traces_ingest_mv"} <= _tables(ch, database)


def test_span_table_keeps_only_skip_indexes_that_can_skip(ch, database):
    """v5: the attribute-key and resource indexes are gone; inserts of up to 64 MB are
    compact parts."""
    migrate(ch, database, target=4)
    migrate(ch, database)
    indexes = {r[0] for r in ch.query(
        "SELECT name FROM system.data_skipping_indices WHERE database = {db:String} AND table = 'otel_traces'",
        parameters={"db": database}).result_rows}
    assert indexes == {"idx_trace_id", "idx_span_attr_value", "idx_duration"}
    assert f"min_bytes_for_wide_part = {64 * 1024 * 1024}" in ch.command(
        f"SHOW CREATE TABLE `{database}`.otel_traces")


def test_ttl_is_set_from_config(ch, database):
    migrate(ch, database, ttl_days=7)
    ddl = ch.command(f"SHOW CREATE TABLE `{database}`.llm_requests")
    assert "toIntervalDay(7)" in ddl
    other = database + "_nottl"
    try:
        migrate(ch, other, ttl_days=0)
        assert "TTL" not in ch.command(f"SHOW CREATE TABLE `{other}`.otel_traces")
    finally:
        ch.command(f"DROP DATABASE IF EXISTS `{other}`")


def test_bad_database_name_is_rejected(ch):
    with pytest.raises(ValueError, match="database name"):
        migrate(ch, "x; DROP TABLE y")


def test_open_from_config_names_a_busy_chdb_directory(tmp_path, chdb_path, ch):
    """chDB is one directory per process: a CLI opening a directory the server holds
    (here: any other directory, in this process) gets an error that says why."""
    from telemetry import TelemetryConfig
    from telemetry.clickhouse import ChdbBusyError, open_from_config

    client, db = open_from_config(TelemetryConfig(clickhouse_url=f"chdb://{chdb_path}",
                                                  database="reports"), tmp_path)
    assert db == "reports" and client.command("SELECT 1") == 1
    with pytest.raises(ChdbBusyError, match="in use"):
        open_from_config(TelemetryConfig(), tmp_path)          # default: <data_dir>/clickhouse
    _, db = open_from_config(
        TelemetryConfig(clickhouse_url=f"chdb://{chdb_path}"), tmp_path)
    assert db == "sluice"


def test_rollups_count_users_traffic_only(ch, database):
    """The monitor's own calls (`traffic = 'evaluator'`) are nobody's requests: the
    dashboards' per-minute rollups leave them out."""
    migrate(ch, database)
    now = datetime.now(timezone.utc)
    for traffic, actions in (("user", ["pii:mask"]), ("evaluator", ["pii:mask"])):
        ch.insert(f"`{database}`.llm_requests",
                  [[now, f"r-{traffic}", "t", "team", "m", traffic, actions]],
                  column_names=["timestamp", "request_id", "tenant", "key_id", "public_model",
                                "traffic", "guardrail_actions"])
    [[requests]] = ch.query(f"SELECT sum(requests) FROM `{database}`.llm_requests_1m").result_rows
    [[actions]] = ch.query(f"SELECT sum(requests) FROM `{database}`.llm_guardrail_actions_1m").result_rows
    assert (requests, actions) == (1, 1)
