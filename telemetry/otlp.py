"""The optional OTLP/HTTP span exporter, for sending the same spans to any OTLP backend."""

from __future__ import annotations

from opentelemetry.sdk.trace.export import SpanExporter

from telemetry.config import OtlpConfig


def build_otlp_exporter(cfg: OtlpConfig) -> SpanExporter:
    """An OTLPSpanExporter from config; a clear error when the extra is not installed."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter,
        )
    except ImportError as exc:  # imported lazily: the package is an optional extra
        raise RuntimeError(
            "telemetry.otlp is configured but opentelemetry-exporter-otlp-proto-http is not "
            "installed: pip install 'sluice-gateway[otlp]'"
        ) from exc
    return OTLPSpanExporter(
        endpoint=cfg.endpoint, headers=dict(cfg.headers), timeout=cfg.timeout_s
    )
