"""DDL fragments every table module of the schema shares (telemetry/schema.py runs them)."""

from __future__ import annotations


def ttl_clause(expr: str, ttl_days: int) -> str:
    """`TTL <expr> + N days`, or nothing when rows are kept forever (`ttl_days` <= 0)."""
    return f"TTL toDateTime({expr}) + toIntervalDay({ttl_days})" if ttl_days > 0 else ""
