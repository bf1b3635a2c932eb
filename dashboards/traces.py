"""Trace view (ClickHouse): find a request, open its trace in Grafana's trace panel (the
plugin's trace support on the Collector-compatible `otel_traces`), and see which spans
are slow or failing."""

from __future__ import annotations

from dashboards.board import DashboardSpec, Variable
from dashboards.panels import ClickHousePanel as P
from dashboards.sql import IN_RANGE, REQUESTS, SPANS

# The trace in the box, or else the newest one in range: the panel is never blank.
_TRACE = f"""if(${{trace_id:singlequote}} != '', ${{trace_id:singlequote}},
    (SELECT argMax(trace_id, timestamp) FROM {REQUESTS} WHERE $__timeFilter(timestamp) AND trace_id != ''))"""

ROWS = [
    ("Trace", [
        P("Recent requests", "table", f"""SELECT timestamp, trace_id, tenant, public_model, deployment, status_code,
    round(latency_ms) AS latency, error_type
FROM {REQUESTS}
WHERE {IN_RANGE}
ORDER BY timestamp DESC
LIMIT 50""", width=24, description="Copy a trace_id into the box above to open it below."),
        P("Trace", "traces", f"""WITH {_TRACE} AS wanted
SELECT TraceId AS traceID, SpanId AS spanID, ParentSpanId AS parentSpanID, ServiceName AS serviceName,
    SpanName AS operationName, Timestamp AS startTime, Duration / 1000000 AS duration,
    arrayMap(key -> map('key', key, 'value', SpanAttributes[key]), mapKeys(SpanAttributes)) AS tags,
    arrayMap(key -> map('key', key, 'value', ResourceAttributes[key]), mapKeys(ResourceAttributes)) AS serviceTags,
    SpanKind AS kind, if(StatusCode IN ('Error', 'STATUS_CODE_ERROR'), 2, 0) AS statusCode,
    StatusMessage AS statusMessage
FROM {SPANS}
WHERE TraceId = wanted
    AND Timestamp >= (SELECT min(Start) FROM ${{database}}.otel_traces_trace_id_ts WHERE TraceId = wanted)
    AND Timestamp <= (SELECT max(End) FROM ${{database}}.otel_traces_trace_id_ts WHERE TraceId = wanted)
ORDER BY startTime
LIMIT 1000""", width=24, height=12,
          description="The trace-id lookup table bounds the scan to the trace's own time range."),
    ]),
    ("Spans", [
        P("Spans per second by span name", "timeseries", f"""SELECT $__timeInterval(Timestamp) AS time, SpanName,
    count() / $__interval_s AS per_s
FROM {SPANS}
WHERE $__timeFilter(Timestamp)
GROUP BY time, SpanName
ORDER BY time""", unit="ops"),
        P("Span duration p95 by span name", "barchart", f"""SELECT SpanName AS span, quantile(0.95)(Duration) / 1e6 AS p95_ms,
    avg(Duration) / 1e6 AS mean_ms
FROM {SPANS}
WHERE $__timeFilter(Timestamp)
GROUP BY span
ORDER BY p95_ms DESC
LIMIT 20""", unit="ms"),
        P("Slowest spans", "table", f"""SELECT Timestamp, TraceId, SpanName, Duration / 1e6 AS duration_ms, StatusCode,
    SpanAttributes['sluice.deployment'] AS deployment
FROM {SPANS}
WHERE $__timeFilter(Timestamp)
ORDER BY Duration DESC
LIMIT 20"""),
        P("Error spans", "table", f"""SELECT Timestamp, TraceId, SpanName, StatusMessage, SpanAttributes['error.type'] AS error_type
FROM {SPANS}
WHERE $__timeFilter(Timestamp) AND StatusCode IN ('Error', 'STATUS_CODE_ERROR')
ORDER BY Timestamp DESC
LIMIT 50"""),
    ]),
]


def spec() -> DashboardSpec:
    return DashboardSpec(
        uid="sluice-traces", title="Sluice / Trace view",
        description="Requests and their traces from otel_traces (ClickHouse plugin trace support).",
        tags=("sluice", "clickhouse", "traces"), rows=ROWS, time_from="now-1h",
        variables=[Variable("trace_id", "trace id", "", textbox=True)])
