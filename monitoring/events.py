"""Events: a value never seen before in a segment, written to `model_events` the first run that sees it.

Kinds and the segment they are keyed by:
- `response_model`, `system_fingerprint`: what the upstream says answered. Keyed by
  (public_model, deployment), tenant "": a provider swapping weights behind an alias
  changes it for every tenant, and one event says so once.
- `prompt_fingerprint`: the application's system prompt + tools. Keyed by (public_model,
  tenant), deployment "": a team's own prompt change. It is an event and the start of a
  new segment, never drift of the old one, and never alerting (the team did it).

The known values of a key are the `new_value`s already in `model_events` (the monitor keeps
no state of its own). The first value ever seen for a key has an empty `old_value` and does
not alert; a value that differs from a known one alerts (`alerting = 1`), with the latest
known value as `old_value`. Several new values in one window are chained in order of first
appearance. The scan covers the baseline and the current window, so the first run over an
existing table learns the values in use before the current window (a model swapped an hour
ago is then a change, not a first value). `requests_since`: the requests that carried the
new value since it appeared (within the scan).
"""

from __future__ import annotations

from datetime import datetime

from monitoring.aggregates import naive_utc
from telemetry.drift_tables import MODEL_EVENTS, ModelEvent
from monitoring.windows import Range, utc

# kind -> (the deployment and tenant expressions of its key)
EVENT_KEYS: dict[str, tuple[str, str]] = {
    "response_model": ("toString(deployment)", "''"),
    "system_fingerprint": ("toString(deployment)", "''"),
    "prompt_fingerprint": ("''", "toString(tenant)"),
}
ALERTING_KINDS = frozenset({"response_model", "system_fingerprint"})


def detect_events(client, database: str, kinds: list[str], columns: set[str], *, scan: Range,
                  operations: list[str], now: datetime) -> list[ModelEvent]:
    """The model_events rows of this run (not yet written)."""
    kinds = [k for k in kinds if k in columns]
    if not kinds:
        return []
    known = _known_values(client, database, kinds)
    seen = _seen_values(client, database, kinds, scan=scan, operations=operations,
                        user_only="traffic" in columns)
    events: list[ModelEvent] = []
    for (kind, model, deployment, tenant), values in sorted(seen.items()):
        history = known.get((kind, model, deployment, tenant), [])
        known_values = {value for value, _ in history}
        latest = max(history, key=lambda item: item[1])[0] if history else ""
        for value, first_seen, requests in sorted(values, key=lambda item: item[1]):
            if value in known_values:
                latest = value          # a known value still in use before the new one appeared
                continue
            alerting = int(bool(latest) and kind in ALERTING_KINDS)
            events.append(ModelEvent(ts=now, public_model=model, deployment=deployment, tenant=tenant, kind=kind,
                                     old_value=latest, new_value=value, first_seen=first_seen,
                                     requests_since=requests, alerting=alerting))
            known_values.add(value)
            latest = value
    return events


def _known_values(client, database: str, kinds: list[str]) -> dict[tuple, list[tuple[str, datetime]]]:
    rows = client.query(
        f"SELECT kind, public_model, deployment, tenant, new_value, max(first_seen) FROM `{database}`.{MODEL_EVENTS} "
        f"WHERE kind IN {{kinds:Array(String)}} GROUP BY kind, public_model, deployment, tenant, new_value",
        parameters={"kinds": kinds}).result_rows
    known: dict[tuple, list[tuple[str, datetime]]] = {}
    for kind, model, deployment, tenant, value, first_seen in rows:
        known.setdefault((kind, model, deployment, tenant), []).append((value, utc(first_seen)))
    return known


def _seen_values(client, database: str, kinds: list[str], *, scan: Range, operations: list[str],
                 user_only: bool) -> dict[tuple, list[tuple[str, datetime, int]]]:
    """(kind, model, deployment, tenant) -> [(value, first seen, requests)] in `scan`."""
    selects = []
    traffic = " AND traffic = 'user'" if user_only else ""     # not the evaluators' own calls
    for kind in kinds:
        deployment, tenant = EVENT_KEYS[kind]
        selects.append(
            f"SELECT '{kind}' AS kind, toString(public_model) AS model, {deployment} AS dep, {tenant} AS ten, "
            f"toString({kind}) AS value, min(timestamp) AS first_seen, count() AS requests "
            f"FROM `{database}`.llm_requests "
            f"WHERE timestamp >= {{cs:DateTime64(3, 'UTC')}} AND timestamp < {{ce:DateTime64(3, 'UTC')}} "
            f"AND operation IN {{ops:Array(String)}} AND {kind} != ''{traffic} "
            f"GROUP BY model, dep, ten, value")
    result = client.query(" UNION ALL ".join(selects), parameters={
        "cs": naive_utc(scan.start), "ce": naive_utc(scan.end), "ops": list(operations)})
    seen: dict[tuple, list[tuple[str, datetime, int]]] = {}
    for kind, model, deployment, tenant, value, first_seen, requests in result.result_rows:
        seen.setdefault((kind, model, deployment, tenant), []).append((value, utc(first_seen), int(requests)))
    return seen
