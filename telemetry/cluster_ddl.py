"""The single-server migrations, rewritten for a ClickHouse cluster.

Migrations (telemetry/schema.py) are written once, for one server. With
`telemetry.clickhouse.cluster` set, `migrate()` passes every statement through
`ClusterDDL.rewrite()`, so a migration added later is covered without a cluster variant:

- every statement runs `ON CLUSTER <cluster>`;
- a MergeTree-family table partitioned by time (the event tables: spans, requests, audit,
  drift metrics) becomes `<name>_local` with the Replicated engine, one replica set per shard,
  plus a Distributed table under the original name that spreads inserts over the shards and
  reads from all of them: writers, reports and dashboards keep using the original names;
- a MergeTree-family table without a partition (bookkeeping: the migrations table, model
  events, pinned baselines; small, read whole, sometimes deduplicated with FINAL) is
  replicated to every node of the cluster instead of sharded (its Keeper path has `all`
  where the shard macro was), so each node sees all of it;
- other engines (the Null ingest table) are created as they are on every node;
- a materialized view reading a sharded table reads its local table and writes into the
  target's local table (each shard keeps its own view of its rows); a view reading an
  unsharded table (the Null ingest table) writes into the Distributed target;
- `ALTER TABLE` of a sharded table alters the local table, and also the Distributed one when
  it changes columns (indexes and settings exist only on the local tables).

A statement of another kind raises ClusterDDLError: a new migration the rewrite does not
understand fails in the tests (tests/telemetry/test_cluster_ddl.py), never half-applied on a
cluster.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from telemetry.config import ClickHouseLayout

LOCAL_SUFFIX = "_local"

_NAME = r"`?(?P<db>[A-Za-z_][A-Za-z0-9_]*)`?\.`?(?P<table>[A-Za-z_][A-Za-z0-9_]*)`?"
_CREATE_DATABASE = re.compile(r"^\s*CREATE\s+DATABASE\s+IF\s+NOT\s+EXISTS\s+`?[A-Za-z_][A-Za-z0-9_]*`?\s*$",
                              re.IGNORECASE)
_CREATE_TABLE = re.compile(r"^\s*CREATE\s+TABLE\s+IF\s+NOT\s+EXISTS\s+" + _NAME, re.IGNORECASE)
_CREATE_VIEW = re.compile(r"^\s*CREATE\s+MATERIALIZED\s+VIEW\s+IF\s+NOT\s+EXISTS\s+" + _NAME, re.IGNORECASE)
_ALTER_TABLE = re.compile(r"^\s*ALTER\s+TABLE\s+" + _NAME, re.IGNORECASE)
_ENGINE = re.compile(r"\bENGINE\s*=\s*(?P<engine>[A-Za-z]*MergeTree)\b(?:\s*\((?P<args>[^()]*)\))?",
                     re.IGNORECASE)
_ANY_ENGINE = re.compile(r"\bENGINE\s*=\s*(?P<engine>[A-Za-z]+)", re.IGNORECASE)
_PARTITION = re.compile(r"\bPARTITION\s+BY\b", re.IGNORECASE)
_VIEW_TO = re.compile(r"\bTO\s+" + _NAME, re.IGNORECASE)
_VIEW_FROM = re.compile(r"\bFROM\s+" + _NAME, re.IGNORECASE)
# ALTER actions that change columns: these apply to the Distributed table too.
_COLUMN_ACTION = re.compile(r"^\s*(ADD|DROP|MODIFY|RENAME|COMMENT|CLEAR)\s+COLUMN\b", re.IGNORECASE)


class ClusterDDLError(ValueError):
    """A migration statement with no known cluster form."""


def _split_actions(actions: str) -> list[str]:
    """`ADD COLUMN a T, ADD COLUMN b Map(K, V)` -> its actions (commas inside brackets kept)."""
    parts, depth, start = [], 0, 0
    quoted = False
    for i, ch in enumerate(actions):
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch in "([":
            depth += 1
        elif not quoted and ch in ")]":
            depth -= 1
        elif not quoted and ch == "," and depth == 0:
            parts.append(actions[start:i])
            start = i + 1
    parts.append(actions[start:])
    return [p.strip() for p in parts if p.strip()]


class ClusterDDL:
    """Rewrites single-server DDL for `layout.cluster`; built from every migration statement,
    so it knows which tables are sharded whichever migration it is asked about."""

    def __init__(self, layout: "ClickHouseLayout", all_statements: Iterable[str]) -> None:
        if not layout.cluster:
            raise ValueError("ClusterDDL needs telemetry.clickhouse.cluster")
        self.layout = layout
        self.on_cluster = f"ON CLUSTER `{layout.cluster}`"
        self.sharded: set[str] = set()
        for sql in all_statements:
            m = _CREATE_TABLE.match(sql)
            if m and _ENGINE.search(sql) and _PARTITION.search(sql):
                self.sharded.add(m["table"])

    def rewrite(self, sql: str) -> list[str]:
        """The statements that do on the cluster what `sql` does on one server."""
        if _CREATE_DATABASE.match(sql):
            return [f"{sql.rstrip()} {self.on_cluster}"]
        if m := _CREATE_TABLE.match(sql):
            return self._create_table(sql, m)
        if m := _CREATE_VIEW.match(sql):
            return [self._create_view(sql, m)]
        if m := _ALTER_TABLE.match(sql):
            return self._alter_table(sql, m)
        raise ClusterDDLError(f"no cluster form for this migration statement: {sql.strip()[:120]}")

    # -- tables ------------------------------------------------------------------------

    def _replicated_engine(self, engine_match: re.Match[str], sharded: bool) -> str:
        path = self.layout.zookeeper_path
        if not sharded:      # one replica set spanning the whole cluster
            path = path.replace("{shard}", "all")
        args = [f"'{path}'", f"'{self.layout.replica_name}'"]
        if engine_match["args"] and engine_match["args"].strip():
            args.append(engine_match["args"].strip())
        return f"ENGINE = Replicated{engine_match['engine']}({', '.join(args)})"

    def _create_table(self, sql: str, m: re.Match[str]) -> list[str]:
        db, table = m["db"], m["table"]
        engine = _ENGINE.search(sql)
        if engine is None:
            if _ANY_ENGINE.search(sql) is None:
                raise ClusterDDLError(f"CREATE TABLE `{db}`.{table} names no engine")
            return [self._with_name(sql, m, f"`{db}`.{table} {self.on_cluster}")]
        if engine["engine"].lower().startswith("replicated"):
            raise ClusterDDLError(f"`{db}`.{table}: already a Replicated engine; write migrations for one server")
        sharded = table in self.sharded
        body = sql[:engine.start()] + self._replicated_engine(engine, sharded) + sql[engine.end():]
        if not sharded:
            return [self._with_name(body, m, f"`{db}`.{table} {self.on_cluster}")]
        local = f"{table}{LOCAL_SUFFIX}"
        distributed = (
            f"CREATE TABLE IF NOT EXISTS `{db}`.{table} {self.on_cluster} AS `{db}`.{local}\n"
            f"ENGINE = Distributed('{self.layout.cluster}', '{db}', '{local}', {self.layout.sharding_key})"
        )
        return [self._with_name(body, m, f"`{db}`.{local} {self.on_cluster}"), distributed]

    @staticmethod
    def _with_name(sql: str, m: re.Match[str], replacement: str) -> str:
        return sql[:m.start("db")].rstrip("`") + replacement + sql[m.end("table"):].lstrip("`")

    # -- views -------------------------------------------------------------------------

    def _local_if_sharded(self, table: str) -> str:
        return f"{table}{LOCAL_SUFFIX}" if table in self.sharded else table

    def _create_view(self, sql: str, m: re.Match[str]) -> str:
        source = _VIEW_FROM.search(sql, m.end())
        target = _VIEW_TO.search(sql, m.end())
        if source is None or target is None:
            raise ClusterDDLError(f"materialized view `{m['db']}`.{m['table']}: expected TO <table> and FROM <table>")
        out = sql
        if source["table"] in self.sharded:     # each shard's view reads its own rows
            out = (out[:source.start()] + f"FROM `{source['db']}`.{source['table']}{LOCAL_SUFFIX}"
                   + out[source.end():])
            out = (out[:target.start()] + f"TO `{target['db']}`.{self._local_if_sharded(target['table'])}"
                   + out[target.end():])
        return self._with_name(out, m, f"`{m['db']}`.{m['table']} {self.on_cluster}")

    # -- alters ------------------------------------------------------------------------

    def _alter_table(self, sql: str, m: re.Match[str]) -> list[str]:
        db, table = m["db"], m["table"]
        actions = sql[m.end():].strip()
        if table not in self.sharded:
            return [f"ALTER TABLE `{db}`.{table} {self.on_cluster}\n    {actions}"]
        kinds = {bool(_COLUMN_ACTION.match(a)) for a in _split_actions(actions)}
        if kinds == {True, False}:
            raise ClusterDDLError(f"ALTER TABLE `{db}`.{table} mixes column changes with other actions: "
                                  f"split it (columns reach the Distributed table, indexes and settings do not)")
        local = f"ALTER TABLE `{db}`.{table}{LOCAL_SUFFIX} {self.on_cluster}\n    {actions}"
        if kinds == {True}:
            return [local, f"ALTER TABLE `{db}`.{table} {self.on_cluster}\n    {actions}"]
        return [local]
