"""`admin_audit`: one row per admin API action (who, what, when), written through the
telemetry connection that writes `llm_requests` (in this process, or the collector's).

Rows never hold a secret: the target is a key's id or a tenant's name, `detail` is the
change as JSON (limits, budget, names, models), and the actor is "master" plus the name
an operator chose to send in `x-sluice-actor` (the CLI sends the login name).
"""

from __future__ import annotations

from clickhouse_connect.driver.client import Client

AUDIT_TABLE = "admin_audit"
AUDIT_COLUMNS: tuple[str, ...] = (
    "timestamp", "request_id", "actor", "client_ip", "action", "target_type", "target_id", "tenant",
    "status", "detail",
)


def audit_table_sql(db: str) -> str:
    """Kept without a TTL: an audit trail outlives the request log."""
    return f"""CREATE TABLE IF NOT EXISTS `{db}`.{AUDIT_TABLE} (
    timestamp DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    request_id String CODEC(ZSTD(1)),
    actor LowCardinality(String),
    client_ip String CODEC(ZSTD(1)),
    action LowCardinality(String),
    target_type LowCardinality(String),
    target_id String CODEC(ZSTD(1)),
    tenant LowCardinality(String),
    status UInt16,
    detail String CODEC(ZSTD(3))
) ENGINE = MergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (timestamp, target_id)"""


def insert_audit(client: Client, database: str, rows: list[tuple]) -> int:
    """Insert `rows` (tuples in AUDIT_COLUMNS order; timestamp a UTC datetime)."""
    if rows:
        client.insert(AUDIT_TABLE, [list(r) for r in rows], column_names=list(AUDIT_COLUMNS), database=database)
    return len(rows)
