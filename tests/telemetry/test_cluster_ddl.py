"""`telemetry.clickhouse.cluster`: the migrations rewritten for a ClickHouse cluster.

No ClickHouse cluster runs here: every generated statement is parsed by the real ClickHouse
engine (chDB's `EXPLAIN AST`), and its shape is checked (ON CLUSTER, Replicated engines,
Distributed twins, views on local tables). The single-server DDL itself runs on chDB in
test_schema.py.
"""

from __future__ import annotations

import re

import pytest

from telemetry.cluster_ddl import ClusterDDL, ClusterDDLError
from telemetry.config import ClickHouseLayout
from telemetry.schema import MIGRATIONS, cluster_statements, migrate

LAYOUT = ClickHouseLayout(cluster="sluice_cluster")
STATEMENTS = cluster_statements("sluice", LAYOUT)
SHARDED = {"otel_traces", "llm_requests", "otel_traces_trace_id_ts", "admin_audit"}


def _created(kind: str) -> dict[str, str]:
    pattern = re.compile(rf"^CREATE {kind} IF NOT EXISTS `sluice`\.(\w+)")
    return {m[1]: sql for sql in STATEMENTS if (m := pattern.match(sql))}


@pytest.mark.parametrize("sql", STATEMENTS, ids=lambda s: " ".join(s.split()[:6])[:60])
def test_every_cluster_statement_parses_in_clickhouse(ch, sql):
    rows = ch.query(f"EXPLAIN AST {sql}").result_rows
    assert rows and rows[0][0].split()[0] in {"CreateQuery", "AlterQuery"}


def test_every_statement_runs_on_the_cluster():
    assert STATEMENTS[0] == "CREATE DATABASE IF NOT EXISTS `sluice` ON CLUSTER `sluice_cluster`"
    assert all("ON CLUSTER `sluice_cluster`" in sql for sql in STATEMENTS)


def test_event_tables_are_sharded_behind_distributed_tables_of_the_same_name():
    tables = _created("TABLE")
    assert SHARDED <= set(tables) - {t for t in tables if t.endswith("_local")}
    for name in SHARDED:
        local = tables[f"{name}_local"]
        assert "ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')" in local
        assert tables[name].endswith(f"ENGINE = Distributed('sluice_cluster', 'sluice', '{name}_local', rand())")


def test_bookkeeping_tables_are_replicated_to_every_node_and_keep_their_engine_arguments():
    tables = _created("TABLE")
    migrations = tables["sluice_schema_migrations"]
    assert "ReplicatedReplacingMergeTree('/clickhouse/tables/all/{database}/{table}', '{replica}')" in migrations
    assert "sluice_schema_migrations_local" not in tables
    for sql in tables.values():        # no plain MergeTree left anywhere
        assert not re.search(r"ENGINE = (?!Replicated|Distributed|Null)", sql), sql


def test_views_read_local_tables_and_the_ingest_view_writes_through_distributed():
    views = _created("MATERIALIZED VIEW")
    trace_ids = views["otel_traces_trace_id_ts_mv"]
    assert "TO `sluice`.otel_traces_trace_id_ts_local" in trace_ids
    assert "FROM `sluice`.otel_traces_local" in trace_ids
    ingest = views["otel_traces_ingest_mv"]
    assert "TO `sluice`.otel_traces\n" in ingest and "FROM `sluice`.otel_traces_ingest" in ingest


def test_column_changes_reach_both_tables_index_and_setting_changes_only_the_local_one():
    alters = [sql for sql in STATEMENTS if sql.startswith("ALTER TABLE")]
    column_alters = [sql for sql in alters if "ADD COLUMN IF NOT EXISTS `limited`" in sql]
    assert [sql.split()[2] for sql in column_alters] == ["`sluice`.llm_requests_local", "`sluice`.llm_requests"]
    for sql in alters:
        if "INDEX" in sql or "SETTING" in sql:
            assert sql.split()[2].endswith("_local`") or sql.split()[2].endswith("_local"), sql


def test_every_migration_has_a_cluster_form():
    # A migration another change adds later is covered or fails here, never half-applied.
    assert len(STATEMENTS) > sum(len(m.statements("sluice", 30)) for m in MIGRATIONS)


def test_statements_with_no_cluster_form_are_refused():
    ddl = ClusterDDL(LAYOUT, ["CREATE TABLE IF NOT EXISTS `db`.t (a UInt8) ENGINE = MergeTree PARTITION BY a ORDER BY a"])
    with pytest.raises(ClusterDDLError, match="mixes column changes"):
        ddl.rewrite("ALTER TABLE `db`.t ADD COLUMN b UInt8, ADD INDEX i b TYPE minmax GRANULARITY 1")
    with pytest.raises(ClusterDDLError, match="no cluster form"):
        ddl.rewrite("INSERT INTO `db`.t VALUES (1)")
    with pytest.raises(ClusterDDLError, match="already a Replicated engine"):
        ddl.rewrite("CREATE TABLE IF NOT EXISTS `db`.u (a UInt8) ENGINE = ReplicatedMergeTree ORDER BY a")


def test_the_single_server_path_is_unchanged_without_a_cluster(ch, database):
    assert migrate(ch, database, cluster=ClickHouseLayout())[-1] == MIGRATIONS[-1].version
    assert not ch.query(f"SELECT name FROM system.tables WHERE database = '{database}' AND name LIKE '%_local'").result_rows
