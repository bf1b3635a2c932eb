"""The TracerProvider Sluice owns (never the global one) and W3C context helpers.

Spans go through one batching processor per exporter: ClickHouse always, OTLP when
configured. OTLP (network I/O) gets the SDK's BatchSpanProcessor and its thread. An
exporter whose `export()` never blocks (the ClickHouse one only converts and queues) can
instead get an `InlineBatchSpanProcessor`, where the spans' producer hands over whole
batches (the collector: a frame of requests at a time).

The sampler respects the caller's `traceparent` sampled flag and samples new root traces
at `sample_ratio`; request rows in `llm_requests` are never sampled.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()   # stateless
_log = logging.getLogger("sluice.telemetry")


def _sluice_version() -> str:
    try:
        return version("sluice-gateway")
    except PackageNotFoundError:
        return "0.0.0"


class CountingBatchSpanProcessor(BatchSpanProcessor):
    """The SDK's BatchSpanProcessor, with its queue-full drops reported to `on_drop`.

    The SDK only logs them (its own drop metric needs an env switch and a MeterProvider).
    The check reads the SDK's internal queue; if a future SDK renames it, spans still
    flow and only this count goes quiet.
    """

    def __init__(self, exporter: SpanExporter, *, on_drop: Callable[[int], None],
                 **kwargs: Any) -> None:
        super().__init__(exporter, **kwargs)
        self._on_drop = on_drop
        inner = getattr(self, "_batch_processor", None)
        self._sdk_queue = getattr(inner, "_queue", None)
        self._sdk_max = getattr(inner, "_max_queue_size", None)

    def on_end(self, span: ReadableSpan) -> None:
        queue = self._sdk_queue
        if (queue is not None and span.context is not None and span.context.trace_flags.sampled
                and len(queue) >= self._sdk_max):
            self._on_drop(1)
        super().on_end(span)


class InlineBatchSpanProcessor(SpanProcessor):
    """Exports batches of ended spans on the producer's thread: no queue, no worker thread.

    For an exporter whose `export()` does no I/O (`ClickHouseSpanExporter` converts and
    enqueues into its bounded writer). A producer that ends spans in bursts calls
    `on_end_batch()` with all of them; `on_end()` (a live span) exports at once. Measured
    in the collector, the SDK BatchSpanProcessor's per-span hand-off (a deque, its metrics,
    an Event, then a second thread converting under the same GIL) cost about as much as
    building the spans. Exports are serialised: several producer threads may share it.
    """

    def __init__(self, exporter: SpanExporter, *, max_export_batch_size: int = 512) -> None:
        self._exporter = exporter
        self._batch = max(1, max_export_batch_size)
        self._lock = threading.Lock()
        self._shutdown = False

    def on_end(self, span: ReadableSpan) -> None:
        self.on_end_batch((span,))

    def on_end_batch(self, spans: Sequence[ReadableSpan]) -> None:
        sampled = [s for s in spans if s.context is not None and s.context.trace_flags.sampled]
        if not sampled or self._shutdown:
            return
        with self._lock:
            for i in range(0, len(sampled), self._batch):
                try:
                    self._exporter.export(sampled[i:i + self._batch])
                except Exception:   # the exporter counts what it drops; keep the producer alive
                    _log.exception("telemetry: span export failed")

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True                # nothing is held here

    def shutdown(self) -> None:
        self._shutdown = True
        self._exporter.shutdown()


def build_tracer_provider(
    *, service_name: str, sample_ratio: float, exporters: Mapping[str, SpanExporter],
    max_queue_size: int, max_export_batch_size: int, schedule_delay_s: float,
    on_drop: Callable[[str, int], None] = lambda name, n: None, inline: frozenset[str] = frozenset(),
    inline_export_batch_size: int | None = None,
) -> tuple[TracerProvider, list[SpanProcessor]]:
    """A provider with one batching processor per named exporter; returns both: a counting
    BatchSpanProcessor, or an `InlineBatchSpanProcessor` for the names in `inline` (exporting
    `inline_export_batch_size` spans at a time, default `max_export_batch_size`).
    `on_drop(name, count)` hears about spans a processor had to drop."""
    resource = Resource.create({"service.name": service_name,
                                "service.version": _sluice_version()})
    provider = TracerProvider(
        resource=resource, sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
    )
    processors: list[SpanProcessor] = []
    for name, exporter in exporters.items():
        if name in inline:
            processor = InlineBatchSpanProcessor(
                exporter, max_export_batch_size=inline_export_batch_size or max_export_batch_size)
            provider.add_span_processor(processor)
            processors.append(processor)
            continue
        bsp = CountingBatchSpanProcessor(
            exporter,
            on_drop=partial(on_drop, name),
            max_queue_size=max_queue_size,
            max_export_batch_size=min(max_export_batch_size, max_queue_size),
            schedule_delay_millis=schedule_delay_s * 1000,
        )
        provider.add_span_processor(bsp)
        processors.append(bsp)
    return provider, processors


def extract_context(
    headers: Mapping[str, str] | Iterable[tuple[bytes, bytes]],
) -> Context:
    """The parent context from W3C `traceparent`/`tracestate` headers.

    Accepts a str mapping (any case) or ASGI's raw `scope["headers"]` list. A missing or
    malformed `traceparent` yields an empty context: the request starts a new trace.
    """
    carrier: dict[str, str] = {}
    items = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in items:
        key = name.decode("latin-1") if isinstance(name, bytes) else name
        key = key.lower()
        if key in ("traceparent", "tracestate"):
            carrier[key] = value.decode("latin-1") if isinstance(value, bytes) else value
    return _PROPAGATOR.extract(carrier) if carrier else Context()


def trace_id_hex(span: Span) -> str:
    """The span's trace id as 32 hex chars (the `x-sluice-trace-id` header value)."""
    return format(span.get_span_context().trace_id, "032x")


def span_id_hex(span: Span) -> str:
    return format(span.get_span_context().span_id, "016x")
