"""Where the monitor reads `llm_requests` and writes its results: `open_trace_store`.

The runner needs three methods of clickhouse-connect's `Client`: `query(sql, parameters)`
(a result with `.result_rows`, `.column_names`, `.named_results()`), `command(sql,
parameters)` and `insert(table, data, column_names=...)`. Which object gives them depends on
who owns the traces:

    telemetry.clickhouse_url = http(s)://...   a clickhouse-connect client of its own
    embedded chDB, a gateway running           CollectorTraceClient: the same calls, run by
      (telemetry.writer: process, default)     the gateway's collector over its Unix socket
    embedded chDB, nobody holding it           the chDB engine, opened here (this process
                                               then holds it until it exits)
    embedded chDB held by a gateway with       no way in from outside (chDB admits one
      telemetry.writer: thread                 process): TraceStoreUnavailable says so; run
                                               the monitor inside that gateway instead
                                               (monitoring.in_process: true)

`sluice serve` with `monitoring.in_process: true` uses `in_process_store(telemetry)`: the
writers' own client with `writer: thread`, the collector with `writer: process`, a client
of its own for a server.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clickhouse_connect.driver.exceptions import DatabaseError

from telemetry.clickhouse import ChdbBusyError, default_url, open_from_config, url_database
from telemetry.collector import socket_path_for
from telemetry.collector_client import CollectorCallError, CollectorCalls, CollectorUnavailable
from telemetry.schema import migrate

if TYPE_CHECKING:
    from telemetry.config import TelemetryConfig
    from telemetry.service import Telemetry

log = logging.getLogger("sluice.monitoring")


class TraceStoreUnavailable(RuntimeError):
    """The traces cannot be reached from this process (the message says why and what to do)."""


class TraceQueryResult:
    """The part of clickhouse-connect's `QueryResult` the monitor reads."""

    def __init__(self, column_names: Sequence[str], result_rows: list[Sequence[Any]]) -> None:
        self.column_names = tuple(column_names)
        self.result_rows = result_rows

    @property
    def row_count(self) -> int:
        return len(self.result_rows)

    @property
    def first_row(self) -> Sequence[Any] | None:
        return self.result_rows[0] if self.result_rows else None

    @property
    def first_item(self) -> dict[str, Any] | None:
        return dict(zip(self.column_names, self.result_rows[0], strict=True)) if self.result_rows else None

    def named_results(self) -> Iterator[dict[str, Any]]:
        names = self.column_names
        for row in self.result_rows:
            yield dict(zip(names, row, strict=True))


class CollectorTraceClient:
    """clickhouse-connect's query / command / insert, run by the collector that owns the
    embedded chDB (`telemetry.collector`, message kinds of the same names). A failing
    statement raises clickhouse-connect's DatabaseError, as a direct client would; a
    collector that is gone raises `CollectorUnavailable` (the next call reconnects). One
    difference: Array(Float32) values (prompt embeddings) come as array('f') rather than
    lists of floats, half the bytes on the socket; len(), indexing and numpy treat them alike."""

    def __init__(self, socket_path: Path, *, timeout_s: float = 300.0) -> None:
        self.socket_path = Path(socket_path)
        self._calls = CollectorCalls(socket_path, timeout_s=timeout_s)

    def query(self, query: str, parameters: Any = None, **kwargs: Any) -> TraceQueryResult:
        names, rows = self._call("query", (query, parameters), kwargs)
        return TraceQueryResult(names, rows)

    def command(self, cmd: str, parameters: Any = None, **kwargs: Any) -> Any:
        return self._call("command", (cmd, parameters), kwargs)

    def insert(self, table: str, data: Sequence[Sequence[Any]], column_names: str | Sequence[str] = "*",
               **kwargs: Any) -> Any:
        rows = [list(row) for row in data]              # generators and tuples travel as lists
        names = column_names if isinstance(column_names, str) else list(column_names)
        return self._call("insert", (table, rows, names), kwargs)

    def ping(self) -> bool:
        try:
            self._calls.call(("stats",), timeout_s=5.0)
            return True
        except (CollectorUnavailable, CollectorCallError):
            return False

    def close(self) -> None:
        self._calls.close()

    def _call(self, kind: str, args: tuple, kwargs: dict[str, Any]) -> Any:
        try:
            return self._calls.call((kind, args, kwargs))
        except CollectorCallError as exc:
            raise DatabaseError(f"{exc} (run by the telemetry collector at {self.socket_path})") from None


def _server_url(cfg: TelemetryConfig) -> bool:
    return bool(cfg.clickhouse_url) and not cfg.clickhouse_url.startswith("chdb://")


def open_trace_store(telemetry_cfg: TelemetryConfig, data_dir: Path, *, run_migrations: bool = True,
                     timeout_s: float = 300.0) -> tuple[Any, str]:
    """(client, database) for a monitor in its own process (`sluice monitor run`), with the
    migrations applied (idempotent: the drift tables exist even if the gateway that created
    the database is older). Blocking. See the module docstring for which client."""
    url = telemetry_cfg.clickhouse_url or default_url(data_dir)
    database = url_database(url) or telemetry_cfg.database
    client: Any = None
    if not _server_url(telemetry_cfg):
        path = socket_path_for(data_dir)              # where `sluice serve` starts its collector
        proxy = CollectorTraceClient(path, timeout_s=timeout_s)
        if proxy.ping():
            log.info("monitor: reading the embedded ClickHouse through the gateway's collector at %s", path)
            client = proxy
    if client is None:
        try:
            client, database = open_from_config(telemetry_cfg, data_dir)
        except ChdbBusyError as exc:
            raise TraceStoreUnavailable(
                f"{exc}. No collector answers on {socket_path_for(data_dir)}: the gateway holding it runs "
                f"telemetry.writer: thread (chDB inside the gateway process). Run the monitor inside "
                f"that gateway (monitoring.in_process: true), or use writer: process (the default) or "
                f"a ClickHouse server") from None
    if run_migrations:
        migrate(client, database, ttl_days=telemetry_cfg.ttl_days)
    return client, database


def in_process_store(telemetry: Telemetry, data_dir: Path) -> tuple[Any, str]:
    """(client, database) for the monitor inside `sluice serve`, from the gateway's own
    telemetry (started: its migrations are applied). Blocking (may connect)."""
    cfg = telemetry.config
    if not telemetry.enabled:
        raise TraceStoreUnavailable("telemetry is disabled (telemetry.enabled: false): there are no traces to monitor")
    if _server_url(cfg):
        return open_trace_store(cfg, data_dir)        # a client of its own: no lock shared with the writers
    if telemetry.sink is not None:                    # writer: thread, chDB in this process
        connection = telemetry.sink.connection
        return connection.get(), connection.database
    assert telemetry.client is not None
    return CollectorTraceClient(telemetry.client.socket_path), url_database(cfg.clickhouse_url or "") or cfg.database
