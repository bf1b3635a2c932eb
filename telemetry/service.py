"""`Telemetry`: the one object the gateway holds for tracing, request rows and metrics.

Built by `Telemetry.from_config()` in the app factory, started and shut down from the
lifespan (in a thread: both may touch the network or a process). On the request path the
gateway only calls `traces.begin()` (ids and the sampling decision) and `record()` (one
row and, when sampled, the trace's facts); neither waits on ClickHouse.

    Telemetry
    ├── traces: TraceStarter (ids, sampling)
    ├── metrics: GatewayMetrics (GET /metrics), updated by record()
    └── record() ── backend
         ├── writer: process (default) ── CollectorClient ══ socket ══► collector process
         │                                                             └── TelemetrySink
         └── writer: thread ── TelemetrySink, in this process

The sink (`telemetry.sink`) turns rows and trace facts into ClickHouse inserts and SDK
spans; the collector process keeps that CPU work off the gateway's GIL
(`telemetry.collector`). `writer: thread` keeps everything in one process (a library
user, the tests sharing one chDB engine).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from opentelemetry import trace
from opentelemetry.context import Context

from telemetry.clickhouse import ClientFactory
from telemetry.collector import CollectorProcess, socket_path_for
from telemetry.collector_client import CollectorClient
from telemetry.config import TelemetryConfig
from telemetry.metrics import GatewayMetrics
from telemetry.pricing import PriceTable
from telemetry.records import RequestRecord
from telemetry.request_codec import float32_bytes, lenient_row, queued_row
from telemetry.sink import REQUESTS_QUEUE, SPANS_QUEUE, TelemetrySink
from telemetry.span_recorder import TraceFacts, TraceStarter
from telemetry.tracing import extract_context

log = logging.getLogger("sluice.telemetry")

COLLECTOR_SOCKET_ENV = "SLUICE_TELEMETRY_SOCKET"   # set by `sluice serve --workers N`


class Telemetry:
    def __init__(
        self, cfg: TelemetryConfig, *, metrics: GatewayMetrics, prices: PriceTable,
        sink: TelemetrySink | None = None, client: CollectorClient | None = None,
    ) -> None:
        self.config = cfg
        self.metrics = metrics
        self.prices = prices
        self.sink = sink
        self.client = client
        self.enabled = sink is not None or client is not None
        self.traces = TraceStarter(cfg.sample_ratio, enabled=self.enabled,
                                   trusted_sources=cfg.trusted_trace_sources)
        self._record_errors = 0

    @classmethod
    def from_config(
        cls, cfg: TelemetryConfig, data_dir: Path, *, client_factory: ClientFactory | None = None,
    ) -> "Telemetry":
        """Build everything, connect nothing (`start()` does). `client_factory` replaces
        the URL-based connection (tests; a custom client) and implies `writer: thread`."""
        metrics = GatewayMetrics(tenant_label=cfg.metrics_tenant_label)
        prices = PriceTable(cfg.prices)
        if not cfg.enabled:
            return cls(cfg, metrics=metrics, prices=prices)
        if cfg.writer == "thread" or client_factory is not None:
            sink = TelemetrySink.from_config(cfg, data_dir, listener=metrics, client_factory=client_factory)
            metrics.register_queue(REQUESTS_QUEUE, lambda: sink.request_writer.depth, cfg.queue_max)
            metrics.register_queue(SPANS_QUEUE, lambda: sink.span_writer.depth, cfg.queue_max)
            return cls(cfg, metrics=metrics, prices=prices, sink=sink)
        shared = os.environ.get(COLLECTOR_SOCKET_ENV)     # a collector the parent process runs
        owner = None if shared else CollectorProcess(cfg, data_dir)
        path = Path(shared) if shared else socket_path_for(data_dir)
        client = CollectorClient(path, metrics=metrics, queue_max=cfg.queue_max, owner=owner,
                                 shared=bool(shared))
        return cls(cfg, metrics=metrics, prices=prices, client=client)

    # Live SDK objects of the in-process sink (None with the collector process).
    @property
    def tracer(self) -> trace.Tracer:
        return self.sink.tracer if self.sink is not None else trace.NoOpTracer()

    @property
    def connection(self):
        return self.sink.connection if self.sink is not None else None

    @property
    def request_writer(self):
        return self.sink.request_writer if self.sink is not None else None

    @property
    def span_writer(self):
        return self.sink.span_writer if self.sink is not None else None

    @property
    def tracer_provider(self):
        return self.sink.tracer_provider if self.sink is not None else None

    # -- lifecycle (call from a thread, never on the event loop) ---------------------

    def start(self) -> None:
        """Start the sink, or the collector process (when this process owns it) and the
        connection to it. Failures are logged; rows are queued and retried."""
        if self.sink is not None:
            self.sink.start()
        elif self.client is not None:
            self.client.start()

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Write everything recorded so far (spans and rows); True when done."""
        if self.sink is not None:
            return self.sink.flush(timeout_s)
        if self.client is not None:
            return self.client.flush(timeout_s)
        return True

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Flush spans and rows within `timeout_s`, then stop whatever runs them."""
        if self.sink is not None:
            self.sink.shutdown(timeout_s)
        elif self.client is not None:
            self.client.shutdown(timeout_s)

    def render_metrics(self) -> tuple[bytes, str]:
        """The /metrics body and content type. One of several workers answers for all of
        them (merged in the collector; blocking); if the collector cannot, for itself."""
        body, content_type = self.metrics.render()
        if self.client is not None and self.client.shared:
            try:
                body = self.client.merged_metrics()
            except (RuntimeError, ValueError) as exc:
                log.warning("telemetry: /metrics for this worker only: %s", exc)
        return body, content_type

    def report(self, since: str, by: str) -> str:
        """The `sluice report` table (blocking); ValueError for bad arguments."""
        if self.sink is not None:
            return self.sink.report(since, by)
        if self.client is not None:
            return self.client.report(since, by)
        raise ValueError("telemetry is disabled")

    def audit(self, rows: list[tuple]) -> int:
        """Write admin API audit rows (`telemetry.audit`) now, through the same ClickHouse
        connection as the request rows (blocking: call from a thread). Raises on failure;
        the caller retries."""
        if self.sink is not None:
            return self.sink.audit(rows)
        if self.client is not None:
            return self.client.audit(rows)
        return 0

    # -- request path -------------------------------------------------------------

    def record(self, rec: RequestRecord, trace: TraceFacts | None = None) -> None:
        """Account one finished request (and its sampled trace). O(1), non-blocking,
        never raises, and never loses the row: a step that fails on an odd value (a
        provider's token count that is no number, text that is no string) is logged and
        skipped, and the row goes on (the writer stores every value it can and flags the
        rest in `anomalies`).

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
        except Exception:
            rec.cost_usd = None                # the odd usage is flagged where it is stored
            self._failed("cost")
        try:
            log_text, cap = self.config.text_policy(rec.tenant)
            if not log_text:
                rec.prompt_text = rec.completion_text = ""
                rec.prompt_embedding = b""
            else:
                if len(rec.prompt_text) > cap:
                    rec.prompt_text = rec.prompt_text[:cap]
                if len(rec.completion_text) > cap:
                    rec.completion_text = rec.completion_text[:cap]
                rec.prompt_embedding = (float32_bytes(rec.prompt_embedding)
                                        if self.config.log_embeddings else b"")
        except Exception:
            self._text_policy_failed(rec)
        try:
            self.metrics.observe_request(rec)
        except Exception:
            self._failed("metrics")            # metrics of this request partly counted
        try:
            row = queued_row(rec)
        except Exception:
            row = lenient_row(rec)
        try:
            if self.client is not None:
                self.client.submit(row, trace)
            elif self.sink is not None:
                self.sink.submit(row, trace)
        except Exception:
            self._failed("submit")
            try:
                self.metrics.rows_dropped(REQUESTS_QUEUE, 1, "invalid")   # counted, never silent
            except Exception:
                pass

    def _failed(self, step: str) -> None:
        self._record_errors += 1
        if self._record_errors == 1 or self._record_errors % 1000 == 0:
            log.exception("telemetry: record() %s failed (%d so far)", step, self._record_errors)

    def _text_policy_failed(self, rec: RequestRecord) -> None:
        """The texts could not be capped (not strings): store none of them, and say so."""
        self._failed("prompt logging policy")
        flags = dict(rec.anomalies) if isinstance(rec.anomalies, dict) else {}
        for name in ("prompt_text", "completion_text"):
            value = getattr(rec, name, "")
            if type(value) is not str:
                flags[name] = f"<{type(value).__name__}: not stored>"
            setattr(rec, name, "")
        rec.prompt_embedding = b""
        rec.anomalies = flags or None

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

