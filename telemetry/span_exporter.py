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
            cls = value.__class__
            if cls is str:
                # Only a string can carry a bearer token under an innocent-looking key.
                text = REDACTED if value.startswith(_BEARER) else value
            elif cls is int:
                text = str(value)
            elif cls is float:
                text = repr(value)
            else:
                text = _as_string(value)
            secret = secret_key.get(key)
            if secret is None:
                secret = _SECRET_NAME.search(key) is not None
                if len(secret_key) < self._MEMO_MAX:
                    secret_key[key] = secret
            out[key] = REDACTED if secret else text
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


_MAP = pa.map_(pa.string(), pa.string())
_TS = pa.timestamp("ns")
_STR = pa.string()
SPAN_ARROW_SCHEMA = pa.schema(list(zip(SPAN_COLUMNS, (
    _TS, _STR, _STR, _STR, _STR, _STR, _STR, _STR, _MAP, _STR, _STR, _MAP, pa.uint64(), _STR,
    _STR, pa.list_(_TS), pa.list_(_STR), pa.list_(_MAP), pa.list_(_STR), pa.list_(_STR),
    pa.list_(_STR), pa.list_(_MAP),
), strict=True)))
_I32 = pa.int32()


class _MapColumn:
    """A Map(String, String) column built from flat keys/values and offsets: converting a
    list of Python dicts with `pa.array` cost about as much as everything else per span."""

    __slots__ = ("offsets", "keys", "values")

    def __init__(self) -> None:
        self.offsets = [0]
        self.keys: list[str] = []
        self.values: list[str] = []

    def add(self, encoded: dict[str, str]) -> None:
        self.keys.extend(encoded)
        self.values.extend(encoded.values())
        self.offsets.append(len(self.keys))

    def array(self) -> pa.Array:
        return pa.MapArray.from_arrays(pa.array(self.offsets, type=_I32), pa.array(self.keys, type=_STR),
                                       pa.array(self.values, type=_STR))


def _repeated_map(encoded: dict[str, str], n: int) -> pa.Array:
    """The same map on every row (the provider's one Resource)."""
    size = len(encoded)
    return pa.MapArray.from_arrays(pa.array(range(0, size * n + 1, size) if size else [0] * (n + 1), type=_I32),
                                   pa.array(list(encoded) * n, type=_STR),
                                   pa.array(list(encoded.values()) * n, type=_STR))


def _empty_lists(n: int, value_type: pa.DataType) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array([0] * (n + 1), type=_I32), pa.array([], type=value_type))


def _hex_ids(ids: list[int], width: str) -> list[str]:
    return [format(i, width) for i in ids]


def spans_to_arrow(spans: Sequence[ReadableSpan], memo: _ResourceMemo) -> pa.RecordBatch:
    """`otel_traces` rows for `spans` as one record batch, built column by column."""
    n = len(spans)
    encode = memo.encode_attributes
    start: list[int] = []
    trace_ids: list[int] = []
    span_ids: list[int] = []
    parents: list[str] = []
    states: list[str] = []
    names: list[str] = []
    kinds: list[str] = []
    scope_names: list[str] = []
    scope_versions: list[str] = []
    durations: list[int] = []
    statuses: list[str] = []
    messages: list[str] = []
    attributes = _MapColumn()
    with_events_or_links = False
    resource = spans[0].resource if n else None
    for span in spans:
        ctx = span.context
        begin = span.start_time or 0
        start.append(begin)
        trace_ids.append(ctx.trace_id)
        span_ids.append(ctx.span_id)
        parents.append(format(span.parent.span_id, "016x") if span.parent is not None else "")
        states.append(ctx.trace_state.to_header() if ctx.trace_state else "")
        names.append(span.name)
        kinds.append(_KIND.get(span.kind, "Unspecified"))
        scope = span.instrumentation_scope
        scope_names.append(scope.name if scope else "")
        scope_versions.append((scope.version or "") if scope else "")
        durations.append(max((span.end_time or begin) - begin, 0))
        statuses.append(_STATUS.get(span.status.status_code, "Unset"))
        messages.append(span.status.description or "")
        # The SDK's BoundedAttributes itself, not the read-only proxy (see _plain_items).
        attributes.add(encode(getattr(span, "_attributes", None) or span.attributes))
        with_events_or_links = with_events_or_links or bool(span.events) or bool(span.links)
        if span.resource is not resource:
            resource = None
    if resource is not None:
        resource_attrs, service = memo.get(resource)
        resource_column = _repeated_map(resource_attrs, n)
        services = pa.array([service] * n, type=_STR)
    else:                                    # several resources in one batch: map them one by one
        resource_map = _MapColumn()
        service_names = []
        for span in spans:
            attrs, service = memo.get(span.resource)
            resource_map.add(attrs)
            service_names.append(service)
        resource_column = resource_map.array()
        services = pa.array(service_names, type=_STR)
    arrays = [
        pa.array(start, type=_TS), pa.array(_hex_ids(trace_ids, "032x"), type=_STR),
        pa.array(_hex_ids(span_ids, "016x"), type=_STR), pa.array(parents, type=_STR),
        pa.array(states, type=_STR), pa.array(names, type=_STR), pa.array(kinds, type=_STR), services,
        resource_column, pa.array(scope_names, type=_STR), pa.array(scope_versions, type=_STR),
        attributes.array(), pa.array(durations, type=pa.uint64()), pa.array(statuses, type=_STR),
        pa.array(messages, type=_STR),
        *(_nested_columns(spans, encode) if with_events_or_links else (
            _empty_lists(n, _TS), _empty_lists(n, _STR), _empty_lists(n, _MAP),
            _empty_lists(n, _STR), _empty_lists(n, _STR), _empty_lists(n, _STR), _empty_lists(n, _MAP))),
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=SPAN_ARROW_SCHEMA)


def _nested_columns(spans: Sequence[ReadableSpan], encode: AttributeEncoder) -> list[pa.Array]:
    """The Events.* and Links.* columns, for batches where some span has them."""
    columns: list[list] = [[] for _ in range(7)]
    for span in spans:
        events = span.events or ()
        links = span.links or ()
        columns[0].append([e.timestamp for e in events])
        columns[1].append([e.name for e in events])
        columns[2].append([encode(e.attributes) for e in events])
        columns[3].append([format(link.context.trace_id, "032x") for link in links])
        columns[4].append([format(link.context.span_id, "016x") for link in links])
        columns[5].append([link.context.trace_state.to_header() if link.context.trace_state else ""
                           for link in links])
        columns[6].append([encode(link.attributes) for link in links])
    types = [field.type for field in list(SPAN_ARROW_SCHEMA)[15:]]
    return [pa.array(col, type=t) for col, t in zip(columns, types, strict=True)]


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
