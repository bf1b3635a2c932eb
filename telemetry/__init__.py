"""Telemetry: OpenTelemetry traces and a request log in ClickHouse, cost, metrics, reports.

The gateway's seam is `Telemetry` (see `telemetry.service`): `tracer` for spans,
`record(RequestRecord)` once per request, `metrics.render()` for `GET /metrics`.
Nothing here is imported by, or imports, the gateway app.
"""

from telemetry.config import OtlpConfig, TelemetryConfig, TenantLogging
from telemetry.metrics import GatewayMetrics
from telemetry.pricing import ModelPrice, PriceTable
from telemetry.records import RequestRecord
from telemetry.service import Telemetry

__all__ = [
    "GatewayMetrics", "ModelPrice", "OtlpConfig", "PriceTable", "RequestRecord", "Telemetry",
    "TelemetryConfig", "TenantLogging",
]
