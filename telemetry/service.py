"""`Telemetry`: the one object the gateway holds for tracing, request rows and metrics.

Built by `Telemetry.from_config()` in the app factory, started and shut down from the
lifespan (in a thread: both may touch the network). On the request path the gateway only
uses `tracer` (spans) and `record()` (one row per request); neither waits on ClickHouse.

    Telemetry
    ├── tracer ── TracerProvider ── BatchSpanProcessor ── ClickHouseSpanExporter ─┐
    │                          └── BatchSpanProcessor ── OTLPSpanExporter (opt.)  │
    ├── record() ── metrics.observe_request() + BatchWriter(llm_requests) ─┐      │
    │                                          BatchWriter(otel_traces) ◄──┼──────┘
    └── metrics (GatewayMetrics, GET /metrics)   both ── ClickHouseConnection (chDB or server)
"""

from __future__ import annotations

import logging
import time
from array import array
from collections.abc import Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from telemetry.batch_writer import BatchWriter
from telemetry.clickhouse import (
    ClickHouseConnection,
    ClientFactory,
    default_url,
    open_client,
    redact_url,
    url_database,
)
from telemetry.config import TelemetryConfig
from telemetry.metrics import GatewayMetrics
from telemetry.otlp import build_otlp_exporter
from telemetry.pricing import PriceTable
from telemetry.records import RequestRecord
from telemetry.request_codec import RequestArrowCodec, queued_row
from telemetry.span_exporter import ClickHouseSpanExporter, SpanArrowCodec
from telemetry.span_recorder import SpanRecorder
from telemetry.tracing import build_tracer_provider, extract_context

log = logging.getLogger("sluice.telemetry")

REQUESTS_QUEUE = "requests"
SPANS_QUEUE = "spans"
OTLP_QUEUE = "otlp"


class Telemetry:
    def __init__(
        self,
        cfg: TelemetryConfig,
        *,
        metrics: GatewayMetrics,
        prices: PriceTable,
        connection: ClickHouseConnection | None = None,
        request_writer: BatchWriter[tuple] | None = None,
        span_writer: BatchWriter[pa.RecordBatch] | None = None,
        tracer_provider: TracerProvider | None = None,
        span_processors: list[BatchSpanProcessor] | None = None,
    ) -> None:
        self.config = cfg
        self.metrics = metrics
        self.prices = prices
        self.connection = connection
        self.request_writer = request_writer
        self.span_writer = span_writer
        self.tracer_provider = tracer_provider
        self._processors = span_processors or []
        self.spans = SpanRecorder(tracer_provider, self._processors)
        self.tracer: trace.Tracer = (
            tracer_provider.get_tracer("sluice") if tracer_provider is not None
            else trace.NoOpTracer()
        )
        self._record_errors = 0

    @classmethod
    def from_config(
        cls, cfg: TelemetryConfig, data_dir: Path, *, client_factory: ClientFactory | None = None,
    ) -> "Telemetry":
        """Build everything, connect nothing (`start()` does). `client_factory` replaces
        the URL-based connection (tests; a custom client)."""
        metrics = GatewayMetrics(tenant_label=cfg.metrics_tenant_label)
        prices = PriceTable(cfg.prices)
        if not cfg.enabled:
            return cls(cfg, metrics=metrics, prices=prices)

        url = cfg.clickhouse_url or default_url(data_dir)
        database = url_database(url) or cfg.database
        factory = client_factory or partial(
            open_client, url, connect_timeout_s=cfg.connect_timeout_s)
        connection = ClickHouseConnection(
            factory, database, ttl_days=cfg.ttl_days,
            description=redact_url(url) if client_factory is None else "client_factory",
        )
        common = dict(
            connection=connection, batch_size=cfg.batch_size,
            flush_interval_s=cfg.flush_interval_s, queue_max=cfg.queue_max,
            retry_backoff_s=cfg.retry_backoff_s, listener=metrics,
        )
        request_writer: BatchWriter[tuple] = BatchWriter(
            name=REQUESTS_QUEUE, codec=RequestArrowCodec(), **common,
        )
        span_writer: BatchWriter[pa.RecordBatch] = BatchWriter(
            name=SPANS_QUEUE, codec=SpanArrowCodec(), **common,
        )
        metrics.register_queue(REQUESTS_QUEUE, lambda: request_writer.depth, cfg.queue_max)
        metrics.register_queue(SPANS_QUEUE, lambda: span_writer.depth, cfg.queue_max)

        exporters: dict[str, SpanExporter] = {SPANS_QUEUE: ClickHouseSpanExporter(span_writer)}
        if cfg.otlp is not None:
            exporters[OTLP_QUEUE] = build_otlp_exporter(cfg.otlp)
        # The processors only hand spans over to the exporters: a short delay and a queue
        # of at least a few batches keep them from ever being the place spans are dropped
        # (the span writer's bounded, counted queue is); their drops are counted anyway.
        provider, processors = build_tracer_provider(
            service_name=cfg.service_name, sample_ratio=cfg.sample_ratio, exporters=exporters,
            max_queue_size=max(cfg.queue_max, 4096), max_export_batch_size=512,
            schedule_delay_s=min(cfg.flush_interval_s, 0.5),
            on_drop=lambda name, n: metrics.rows_dropped(name, n, "processor_queue_full"),
        )
        return cls(
            cfg, metrics=metrics, prices=prices, connection=connection,
            request_writer=request_writer, span_writer=span_writer,
            tracer_provider=provider, span_processors=processors,
        )

    # -- lifecycle (call from a thread, never on the event loop) ---------------------

    def start(self) -> None:
        """Connect and migrate once (failures are logged, the writers retry), start workers."""
        if self.connection is not None:
            try:
                self.connection.get()
            except Exception as exc:
                log.error("telemetry: ClickHouse at %s unavailable at start (%s); rows are "
                          "queued and retried in the background", self.connection.description, exc)
        for writer in (self.request_writer, self.span_writer):
            if writer is not None:
                writer.start()

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Write everything recorded so far (ended spans and rows); True when done."""
        deadline = time.monotonic() + timeout_s
        ok = True
        for bsp in self._processors:
            ok = bsp.force_flush(int(max(0.0, deadline - time.monotonic()) * 1000)) and ok
        for writer in (self.span_writer, self.request_writer):
            if writer is not None:
                ok = writer.flush(max(0.0, deadline - time.monotonic())) and ok
        return ok

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Flush spans and rows within `timeout_s`, stop the workers, close the client."""
        deadline = time.monotonic() + timeout_s

        def remaining() -> float:
            return max(0.0, deadline - time.monotonic())

        # The processors hand their queued spans to the exporters (the ClickHouse one only
        # enqueues, so this is quick); then the writers drain within the deadline.
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        writers = [w for w in (self.request_writer, self.span_writer) if w is not None]
        for writer in writers:           # both drain in parallel, same deadline
            writer.stop(remaining())
        for writer in writers:
            writer.shutdown(remaining())
        if self.connection is not None:
            self.connection.close()

    # -- request path -------------------------------------------------------------

    def record(self, rec: RequestRecord) -> None:
        """Account one finished request. O(1), non-blocking, never raises.

        Fills `cost_usd` when missing, applies the tenant's prompt logging policy, updates
        the metrics and queues the row. The record belongs to telemetry afterwards.
        """
        try:
            if rec.cost_usd is None:
                rec.cost_usd = self.cost(
                    rec.provider_type, rec.response_model or rec.upstream_model,
                    rec.input_tokens, rec.output_tokens, rec.cached_tokens,
                )
                if rec.cost_usd is None and rec.response_model and rec.upstream_model:
                    rec.cost_usd = self.cost(rec.provider_type, rec.upstream_model,
                                             rec.input_tokens, rec.output_tokens,
                                             rec.cached_tokens)
            log_text, cap = self.config.text_policy(rec.tenant)
            if not log_text:
                rec.prompt_text = rec.completion_text = ""
                rec.prompt_embedding = []
            else:
                if len(rec.prompt_text) > cap:
                    rec.prompt_text = rec.prompt_text[:cap]
                if len(rec.completion_text) > cap:
                    rec.completion_text = rec.completion_text[:cap]
                rec.prompt_embedding = (_compact_embedding(rec.prompt_embedding)
                                        if self.config.log_embeddings else [])
            self.metrics.observe_request(rec)
            if self.request_writer is not None:
                self.request_writer.put(queued_row(rec))
        except Exception:
            self._record_errors += 1
            if self._record_errors == 1 or self._record_errors % 1000 == 0:
                log.exception("telemetry: record() failed (%d so far)", self._record_errors)

    def cost(
        self, provider_type: str, model: str, input_tokens: int | None,
        output_tokens: int | None, cached_tokens: int | None = 0,
    ) -> float | None:
        """USD for the usage at the configured prices; None when the model has no price."""
        return self.prices.cost(provider_type, model, input_tokens, output_tokens, cached_tokens)

    @staticmethod
    def extract_context(
        headers: Mapping[str, str] | Iterable[tuple[bytes, bytes]],
    ) -> Context:
        """Parent context from an incoming W3C `traceparent` (ASGI headers or a mapping)."""
        return extract_context(headers)


def _compact_embedding(embedding: Any) -> Any:
    """float32 array('f') from a list or numpy vector: 4 bytes a dimension while queued
    instead of a Python float object each; [] for None or empty."""
    if embedding is None or len(embedding) == 0:
        return []
    if isinstance(embedding, array) and embedding.typecode == "f":
        return embedding
    if hasattr(embedding, "astype"):             # numpy: no per-element Python objects
        return array("f", embedding.astype("float32").tobytes())
    return array("f", embedding)
