"""`ClickHouseSpanExporter`: the SDK's BatchSpanProcessor hands it spans, it queues them.

`export()` runs on the processor's thread: it converts the batch of spans into one Arrow
record batch and enqueues it into a `BatchWriter` for `otel_traces`; retries, backoff
while ClickHouse is down, the memory bound and drop counting live in the writer, the same
machinery as the request rows. Converting at once matters: a queued SDK span is a dozen
garbage-collected objects, and thousands of them waiting for the next INSERT make every
full collection (which stops the event loop too) long; a record batch is one object.
The conversion matches the OpenTelemetry Collector's ClickHouse exporter (hex ids,
kind/status names, attribute values as strings, arrays as JSON), so tools built for the
collector's `otel_traces` read Sluice's spans unchanged.

Secrets: the gateway never puts credentials on spans, but an attribute whose name looks
like a credential (authorization, api-key, cookie, ...) or whose value is a bearer token
is stored as "[REDACTED]" anyway.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import orjson
import pyarrow as pa
from clickhouse_connect.driver.client import Client
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, StatusCode

from telemetry.batch_writer import BatchWriter

log = logging.getLogger("sluice.telemetry")

SPAN_COLUMNS: tuple[str, ...] = (
    "Timestamp", "TraceId", "SpanId", "ParentSpanId", "TraceState", "SpanName", "SpanKind",
    "ServiceName", "ResourceAttributes", "ScopeName", "ScopeVersion", "SpanAttributes",
    "Duration", "StatusCode", "StatusMessage",
    "Events.Timestamp", "Events.Name", "Events.Attributes",
    "Links.TraceId", "Links.SpanId", "Links.TraceState", "Links.Attributes",
)

_KIND = {
    SpanKind.INTERNAL: "Internal", SpanKind.SERVER: "Server", SpanKind.CLIENT: "Client",
    SpanKind.PRODUCER: "Producer", SpanKind.CONSUMER: "Consumer",
}
_STATUS = {StatusCode.UNSET: "Unset", StatusCode.OK: "Ok", StatusCode.ERROR: "Error"}
_SECRET_NAME = re.compile(r"authorization|api[-_]?key|cookie|password|secret", re.IGNORECASE)
_BEARER = ("Bearer ", "bearer ", "BEARER ")
REDACTED = "[REDACTED]"


def _as_string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if isinstance(value, float) else str(value)
    if isinstance(value, (list, tuple)):
        return orjson.dumps(list(value)).decode()
    return str(value)


def _plain_items(attributes: Any):
    """Items of an attribute mapping. The SDK's BoundedAttributes (behind a
    MappingProxyType on spans) iterates through Python-level __getitem__ calls; its
    plain `_dict`, when present, is several times faster to walk. Falls back to the
    public Mapping interface if the SDK's internals change."""
    inner = getattr(attributes, "_dict", None)
    return inner.items() if isinstance(inner, dict) else attributes.items()


class AttributeEncoder:
    """Attributes -> Map(String, String), credentials replaced by "[REDACTED]".

    Whether a key names a credential is decided once per distinct key (memoised,
    bounded): keys are few, values are many.
    """

    _MEMO_MAX = 4096

    def __init__(self) -> None:
        self._secret_key: dict[str, bool] = {}

    def __call__(self, attributes: Any) -> dict[str, str]:
        out: dict[str, str] = {}
        if not attributes:
            return out
        secret_key = self._secret_key
        for key, value in _plain_items(attributes):
            text = value if value.__class__ is str else _as_string(value)
            secret = secret_key.get(key)
            if secret is None:
                secret = _SECRET_NAME.search(key) is not None
                if len(secret_key) < self._MEMO_MAX:
                    secret_key[key] = secret
            out[key] = REDACTED if secret or text.startswith(_BEARER) else text
        return out


class _ResourceMemo:
    """The tracer provider has one Resource: convert its attributes once, not per span."""

    def __init__(self) -> None:
        self._resource: Resource | None = None
        self._attrs: dict[str, str] = {}
        self._service = ""
        self.encode_attributes = AttributeEncoder()

    def get(self, resource: Resource) -> tuple[dict[str, str], str]:
        if resource is not self._resource:
            self._attrs = self.encode_attributes(resource.attributes)
            self._service = str(resource.attributes.get("service.name", ""))
            self._resource = resource
        return self._attrs, self._service


def span_to_row(span: ReadableSpan, memo: _ResourceMemo | None = None) -> tuple:
    """One `otel_traces` row, in `SPAN_COLUMNS` order."""
    memo = memo or _ResourceMemo()
    encode = memo.encode_attributes
    ctx = span.context
    resource_attrs, service = memo.get(span.resource)
    scope = span.instrumentation_scope
    start = span.start_time or 0
    end = span.end_time or start
    events = span.events or ()
    links = span.links or ()
    return (
        start,
        format(ctx.trace_id, "032x"),
        format(ctx.span_id, "016x"),
        format(span.parent.span_id, "016x") if span.parent is not None else "",
        ctx.trace_state.to_header() if ctx.trace_state else "",
        span.name,
        _KIND.get(span.kind, "Unspecified"),
        service,
        resource_attrs,
        scope.name if scope else "",
        (scope.version or "") if scope else "",
        # The SDK's BoundedAttributes itself, not the read-only proxy (see _plain_items).
        encode(getattr(span, "_attributes", None) or span.attributes),
        max(end - start, 0),
        _STATUS.get(span.status.status_code, "Unset"),
        span.status.description or "",
        [e.timestamp for e in events],
        [e.name for e in events],
        [encode(e.attributes) for e in events],
        [format(link.context.trace_id, "032x") for link in links],
        [format(link.context.span_id, "016x") for link in links],
        [link.context.trace_state.to_header() if link.context.trace_state else ""
         for link in links],
        [encode(link.attributes) for link in links],
    )


_MAP = pa.map_(pa.string(), pa.string())
_TS = pa.timestamp("ns")
_STR = pa.string()
SPAN_ARROW_SCHEMA = pa.schema(list(zip(SPAN_COLUMNS, (
    _TS, _STR, _STR, _STR, _STR, _STR, _STR, _STR, _MAP, _STR, _STR, _MAP, pa.uint64(), _STR,
    _STR, pa.list_(_TS), pa.list_(_STR), pa.list_(_MAP), pa.list_(_STR), pa.list_(_STR),
    pa.list_(_STR), pa.list_(_MAP),
), strict=True)))


def spans_to_arrow(spans: Sequence[ReadableSpan], memo: _ResourceMemo) -> pa.RecordBatch:
    """`otel_traces` rows for `spans` as one record batch."""
    columns = list(zip(*(span_to_row(span, memo) for span in spans), strict=True)) if spans \
        else [() for _ in SPAN_COLUMNS]
    arrays = [pa.array(col, type=field.type)
              for col, field in zip(columns, SPAN_ARROW_SCHEMA, strict=True)]
    return pa.RecordBatch.from_arrays(arrays, schema=SPAN_ARROW_SCHEMA)


class SpanArrowCodec:
    """The `TableCodec` of the span writer: its items are record batches already."""

    table = "otel_traces"

    def encode(self, items: list[pa.RecordBatch]) -> pa.Table:
        return pa.Table.from_batches(items, schema=SPAN_ARROW_SCHEMA)

    def insert(self, client: Client, database: str, batch: pa.Table) -> None:
        client.insert_arrow(self.table, batch, database=database)


class ClickHouseSpanExporter(SpanExporter):
    """A SpanExporter whose `export()` never does I/O: it feeds a bounded BatchWriter."""

    def __init__(self, writer: BatchWriter[pa.RecordBatch]) -> None:
        self._writer = writer
        self._memo = _ResourceMemo()     # export() calls are serialised by the processor

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        keep = min(len(spans), self._writer.free_rows)
        if keep < len(spans):
            self._writer.count_dropped(len(spans) - keep, "queue_full")
        if keep == 0:
            return SpanExportResult.FAILURE
        try:
            block = spans_to_arrow(spans[:keep], self._memo)
        except Exception:
            block = self._salvage(spans[:keep])
            if block is None:
                return SpanExportResult.FAILURE
        accepted = self._writer.put(block, rows=block.num_rows)
        return SpanExportResult.SUCCESS if accepted and keep == len(spans) \
            else SpanExportResult.FAILURE

    def _salvage(self, spans: Sequence[ReadableSpan]) -> pa.RecordBatch | None:
        """Convert span by span, dropping (and counting) the ones that fail."""
        good = []
        for span in spans:
            try:
                spans_to_arrow([span], self._memo)
                good.append(span)
            except Exception:
                log.exception("telemetry: cannot convert span %r; dropped", span.name)
        self._writer.count_dropped(len(spans) - len(good), "invalid")
        return spans_to_arrow(good, self._memo) if good else None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._writer.flush(timeout_millis / 1000)

    def shutdown(self) -> None:
        """Nothing to do: the writer's owner (Telemetry) shuts it down with its own
        deadline, after the BatchSpanProcessor has handed over its last spans."""
