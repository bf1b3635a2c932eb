"""`TelemetrySink`: where finished requests become rows and spans in ClickHouse.

It runs inside the collector process by default (`telemetry.collector`), or inside the
gateway process with `telemetry.writer: thread`. Either way the request path only hands it
a request row (a tuple) and, for sampled requests, the trace's facts; nothing waits on
ClickHouse.

    TelemetrySink
    ├── submit(row, trace)
    │    ├── row ──────────────────────────────► BatchWriter(llm_requests) ─┐
    │    └── trace ── SpanRecorder ── BatchSpanProcessor ── ClickHouseSpanExporter
    │                              │  (Inline- in the collector)
    │                              │                         └► BatchWriter(otel_traces)
    │                              └── BatchSpanProcessor ── OTLPSpanExporter (opt.)
    ├── tracer (live SDK spans, for code outside the request path)   │
    └── report()                    both writers ── ClickHouseConnection (chDB or server)
"""

from __future__ import annotations

import logging
import threading
import time
from functools import partial
from pathlib import Path

import pyarrow as pa
from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter

from telemetry.batch_writer import BatchWriter, Ticket, WriterListener
from telemetry.clickhouse import (
    ClickHouseConnection,
    ClientFactory,
    default_url,
    open_client,
    redact_url,
    url_database,
)
from telemetry.config import TelemetryConfig
from telemetry.otlp import build_otlp_exporter
from telemetry.report import GROUP_COLUMNS, parse_since, report
from telemetry.request_codec import RequestArrowCodec, RowChunk
from telemetry.span_exporter import ClickHouseSpanExporter, SpanArrowCodec
from telemetry.span_recorder import SpanRecorder, TraceFacts
from telemetry.tracing import build_tracer_provider

log = logging.getLogger("sluice.telemetry")

class _NoTicket:
    """Stands in for the ClickHouse span exporter's `ticket` slot when there is none."""

    ticket = None


REQUESTS_QUEUE = "requests"
SPANS_QUEUE = "spans"
OTLP_QUEUE = "otlp"


class TelemetrySink:
    def __init__(
        self,
        cfg: TelemetryConfig,
        *,
        connection: ClickHouseConnection,
        request_writer: BatchWriter[tuple],
        span_writer: BatchWriter[pa.RecordBatch],
        tracer_provider: TracerProvider,
        span_processors: list[SpanProcessor],
        listener: WriterListener,
        span_exporter: ClickHouseSpanExporter | None = None,
        inline_spans: bool = False,
    ) -> None:
        self.config = cfg
        self.connection = connection
        self.request_writer = request_writer
        self.span_writer = span_writer
        self.tracer_provider = tracer_provider
        self._processors = span_processors
        self._listener = listener
        self.spans = SpanRecorder(tracer_provider.resource, span_processors)
        self.tracer: trace.Tracer = tracer_provider.get_tracer("sluice")
        self._span_lock = threading.Lock()
        # Inline (the collector): the exporter runs on the submitting thread, so the ticket
        # set around a frame's spans is theirs. Behind a processor thread it would not be.
        self._span_exporter = span_exporter if inline_spans and span_exporter is not None else _NoTicket()

    @classmethod
    def from_config(
        cls, cfg: TelemetryConfig, data_dir: Path, *, listener: WriterListener,
        client_factory: ClientFactory | None = None, inline_spans: bool = False,
    ) -> "TelemetrySink":
        """Build everything, connect nothing (`start()` does). `listener` hears about rows
        written and dropped; `client_factory` replaces the URL-based connection (tests).
        `inline_spans`: spans reach the ClickHouse exporter on the submitting thread, in
        `submit_many()`'s batches (the collector), instead of through a processor thread."""
        url = cfg.clickhouse_url or default_url(data_dir)
        database = url_database(url) or cfg.database
        factory = client_factory or partial(
            open_client, url, connect_timeout_s=cfg.connect_timeout_s)
        connection = ClickHouseConnection(
            factory, database, ttl_days=cfg.ttl_days, run_migrations=cfg.migrate_on_start,
            cluster=cfg.clickhouse, description=redact_url(url) if client_factory is None else "client_factory",
        )
        common = dict(
            connection=connection, batch_size=cfg.batch_size,
            flush_interval_s=cfg.flush_interval_s, queue_max=cfg.queue_max,
            retry_backoff_s=cfg.retry_backoff_s, listener=listener,
        )
        request_writer: BatchWriter[tuple] = BatchWriter(
            name=REQUESTS_QUEUE, codec=RequestArrowCodec(), **common,
        )
        span_writer: BatchWriter[pa.RecordBatch] = BatchWriter(
            name=SPANS_QUEUE, codec=SpanArrowCodec(), **common,
        )
        span_exporter = ClickHouseSpanExporter(span_writer)
        exporters: dict[str, SpanExporter] = {SPANS_QUEUE: span_exporter}
        if cfg.otlp is not None:
            exporters[OTLP_QUEUE] = build_otlp_exporter(cfg.otlp)
        # The processors only hand spans over to the exporters: a short delay and a queue
        # of at least a few batches keep them from ever being the place spans are dropped
        # (the span writer's bounded, counted queue is); their drops are counted anyway.
        provider, processors = build_tracer_provider(
            service_name=cfg.service_name, sample_ratio=cfg.sample_ratio, exporters=exporters,
            max_queue_size=max(cfg.queue_max, 4096), max_export_batch_size=512,
            schedule_delay_s=min(cfg.flush_interval_s, 0.5),
            on_drop=lambda name, n: listener.rows_dropped(name, n, "processor_queue_full"),
            inline=frozenset({SPANS_QUEUE}) if inline_spans else frozenset(),
            # A frame's spans in one block: a request's spans are then written (or not)
            # together, which is what dedupe() of a resent frame relies on.
            inline_export_batch_size=1 << 30,
        )
        return cls(cfg, connection=connection, request_writer=request_writer,
                   span_writer=span_writer, tracer_provider=provider,
                   span_processors=processors, listener=listener, span_exporter=span_exporter,
                   inline_spans=inline_spans)

    @property
    def writers(self) -> tuple[BatchWriter, ...]:
        return (self.request_writer, self.span_writer)

    # -- lifecycle (blocking: call from a thread, never on an event loop) ------------

    def start(self) -> None:
        """Start the writers, then connect and migrate (see `connect()`)."""
        self.start_writers()
        self.connect()

    def start_writers(self) -> None:
        """From here on `flush()` means something: the writers drain their queues (each
        first batch waits for the connection and the migrations)."""
        for writer in self.writers:
            writer.start()

    def connect(self) -> None:
        """Connect and migrate once; a failure is logged and the writers retry."""
        try:
            self.connection.get()
        except Exception as exc:
            log.error("telemetry: ClickHouse at %s unavailable at start (%s); rows are "
                      "queued and retried in the background", self.connection.description, exc)

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Write everything submitted so far (spans and rows); True when done."""
        deadline = time.monotonic() + timeout_s
        ok = True
        for processor in self._processors:
            ok = processor.force_flush(int(max(0.0, deadline - time.monotonic()) * 1000)) and ok
        for writer in (self.span_writer, self.request_writer):
            ok = writer.flush(max(0.0, deadline - time.monotonic())) and ok
        return ok

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Flush spans and rows within `timeout_s`, stop the workers, close the client."""
        deadline = time.monotonic() + timeout_s

        def remaining() -> float:
            return max(0.0, deadline - time.monotonic())

        # The processors hand their queued spans to the exporters (the ClickHouse one only
        # enqueues, so this is quick); then the writers drain within the deadline.
        self.tracer_provider.shutdown()
        for writer in self.writers:           # both drain in parallel, same deadline
            writer.stop(remaining())
        for writer in self.writers:
            writer.shutdown(remaining())
        self.connection.close()

    # -- data -------------------------------------------------------------------------

    def submit(self, row: tuple, facts: TraceFacts | None = None) -> None:
        """One request: its `llm_requests` row (`queued_row()` tuple) and sampled spans."""
        self.request_writer.put(row)
        if facts is not None:
            self.spans.record(facts, row)

    def submit_many(self, entries: list[tuple[tuple, TraceFacts | None]], ticket: Ticket | None = None,
                    *, client: str = "", first_seq: int = 0) -> None:
        """A batch of requests (a collector frame from gateway process `client`, numbered
        from `first_seq`): rows first, as one chunk, then all of their spans in one hand-over
        to the processors. With a `ticket`, what becomes of the rows and the spans (written,
        dropped and why) is counted on it rather than reported to the listener."""
        chunk = RowChunk([row for row, _ in entries], client, first_seq)
        self.request_writer.put(chunk, len(chunk), ticket, head=RowChunk.head)
        with self._span_lock:
            self._span_exporter.ticket = ticket
            try:
                self.spans.record_many(entries, on_invalid=partial(self._invalid_spans, ticket))
            finally:
                self._span_exporter.ticket = None

    def _invalid_spans(self, ticket: Ticket | None, count: int) -> None:
        """Spans of a trace whose facts could not be made into spans (a bug upstream)."""
        self.span_writer.count_dropped(count, "invalid", ticket)

    def audit(self, rows: list[tuple]) -> int:
        """Admin API audit rows, inserted now (blocking; rare: one per admin action)."""
        from telemetry.audit import insert_audit
        return insert_audit(self.connection.get(), self.connection.database, rows)

    def report(self, since: str, by: str) -> str:
        """The `sluice report` table, including the requests just submitted (blocking)."""
        if by not in GROUP_COLUMNS:
            raise ValueError(f"by must be one of {', '.join(GROUP_COLUMNS)}")
        parse_since(since)
        self.flush(5.0)
        return report(self.connection.get(), self.connection.database, since=since, by=by)
