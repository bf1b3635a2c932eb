"""`ClickHouseSpanExporter`: the SDK's BatchSpanProcessor hands it spans, it queues them.

`export()` runs on the processor's thread: it converts the batch of spans into one Arrow
record batch and enqueues it into a `BatchWriter` for `otel_traces_ingest`, a Null table
whose view writes `otel_traces` (`schema.py`); retries, backoff
while ClickHouse is down, the memory bound and drop counting live in the writer, the same
machinery as the request rows. Converting at once matters: a queued SDK span is a dozen
garbage-collected objects, and thousands of them waiting for the next INSERT make every
full collection (which stops the event loop too) long; a record batch is one object.
The conversion matches the OpenTelemetry Collector's ClickHouse exporter (hex ids,
kind/status names, attribute values as strings, arrays as JSON), so tools built for the
collector's `otel_traces` read Sluice's spans unchanged. Attribute maps go as one JSON
object per span, written by orjson and mapped by ClickHouse: stringifying every value in
Python was most of the exporter's cost.

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


class AttributeJson:
    """A span's attributes as one JSON object (bytes) for `otel_traces_ingest`.

    orjson writes the whole mapping in C; the table's view stringifies the values in
    ClickHouse (numbers and booleans as text, arrays as JSON), as the Collector's exporter
    stores them. The slow path (`AttributeEncoder`, then JSON) is taken only when the
    mapping holds a key not seen before or one naming a credential, a value that could be
    a bearer token, or a value orjson rejects. Keys are few and repeat: the check is one
    set comparison per span.
    """

    _KNOWN_MAX = 4096

    def __init__(self, encoder: AttributeEncoder) -> None:
        self.encode = encoder
        self._safe_keys: set[str] = set()

    def __call__(self, attributes: Any) -> bytes:
        if not attributes:
            return b"{}"
        inner = getattr(attributes, "_dict", attributes)
        items = inner if isinstance(inner, dict) else dict(attributes)
        if not items.keys() <= self._safe_keys and not self._learn(items):
            return orjson.dumps(self.encode(items))
        try:
            data = orjson.dumps(items)
        except TypeError:                    # a value JSON cannot hold as it is
            return orjson.dumps(self.encode(items))
        # Any string starting "Bearer " shows up as `"Bearer ` in the JSON (a false alarm
        # only costs the slow path).
        if b'"Bearer ' in data or b'"bearer ' in data or b'"BEARER ' in data:
            return orjson.dumps(self.encode(items))
        return data

    def _learn(self, items: dict) -> bool:
        """Remember the new keys; False when one of them names a credential."""
        safe = True
        for key in items.keys() - self._safe_keys:
            if not isinstance(key, str) or _SECRET_NAME.search(key) is not None:
                safe = False
            elif len(self._safe_keys) < self._KNOWN_MAX:
                self._safe_keys.add(key)
            else:
                safe = False                 # unknown and unremembered: check it the slow way
        return safe


class _ResourceMemo:
    """The tracer provider has one Resource: convert its attributes once, not per span."""

    def __init__(self) -> None:
        self._resource: Resource | None = None
        self._json = b"{}"
        self._service = ""
        self.encode_attributes = AttributeEncoder()
        self.attributes_json = AttributeJson(self.encode_attributes)

    def get(self, resource: Resource) -> tuple[bytes, str]:
        if resource is not self._resource:
            self._json = orjson.dumps(self.encode_attributes(resource.attributes))
            self._service = str(resource.attributes.get("service.name", ""))
            self._resource = resource
        return self._json, self._service


_MAP = pa.map_(pa.string(), pa.string())
_TS = pa.timestamp("ns")
_STR = pa.string()
_BIN = pa.binary()
_DICT = pa.dictionary(pa.int32(), _BIN)
SPAN_INGEST_TABLE = "otel_traces_ingest"
# otel_traces' columns, but the attribute maps travel as JSON (see `AttributeJson`).
INGEST_COLUMNS: tuple[str, ...] = tuple(
    {"ResourceAttributes": "ResourceAttributesJson", "SpanAttributes": "SpanAttributesJson"}.get(c, c)
    for c in SPAN_COLUMNS)
SPAN_ARROW_SCHEMA = pa.schema(list(zip(INGEST_COLUMNS, (
    _TS, _STR, _STR, _STR, _STR, _STR, _STR, _STR, _DICT, _STR, _STR, _BIN, pa.uint64(), _STR,
    _STR, pa.list_(_TS), pa.list_(_STR), pa.list_(_MAP), pa.list_(_STR), pa.list_(_STR),
    pa.list_(_STR), pa.list_(_MAP),
), strict=True)))
_I32 = pa.int32()


def _empty_lists(n: int, value_type: pa.DataType) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array([0] * (n + 1), type=_I32), pa.array([], type=value_type))


def spans_to_arrow(spans: Sequence[ReadableSpan], memo: _ResourceMemo) -> pa.RecordBatch:
    """`otel_traces_ingest` rows for `spans` as one record batch, built column by column."""
    n = len(spans)
    attributes_json = memo.attributes_json
    start: list[int] = []
    trace_ids: list[str] = []
    span_ids: list[str] = []
    parents: list[str] = []
    states: list[str] = []
    names: list[str] = []
    kinds: list[str] = []
    durations: list[int] = []
    statuses: list[str] = []
    messages: list[str] = []
    attributes: list[bytes] = []
    resources: list[int] = []
    resource_json: dict[bytes, int] = {}
    services: list[str] = []
    scope_names: list[str] = []
    scope_versions: list[str] = []
    nested = False
    for span in spans:
        ctx = span.context
        begin = span.start_time or 0
        start.append(begin)
        trace_ids.append(format(ctx.trace_id, "032x"))
        span_ids.append(format(ctx.span_id, "016x"))
        parent = span.parent
        parents.append(format(parent.span_id, "016x") if parent is not None else "")
        states.append(ctx.trace_state.to_header() if ctx.trace_state else "")
        names.append(span.name)
        kinds.append(_KIND.get(span.kind, "Unspecified"))
        end = span.end_time
        durations.append(end - begin if end is not None and end > begin else 0)
        status = span.status
        statuses.append(_STATUS.get(status.status_code, "Unset"))
        messages.append(status.description or "")
        # The SDK's BoundedAttributes itself, not the read-only proxy (see _plain_items).
        attributes.append(attributes_json(getattr(span, "_attributes", None) or span.attributes))
        rjson, service = memo.get(span.resource)
        resources.append(resource_json.setdefault(rjson, len(resource_json)))
        services.append(service)
        scope = span.instrumentation_scope
        scope_names.append(scope.name if scope else "")
        scope_versions.append((scope.version or "") if scope else "")
        nested = nested or bool(span.events) or bool(span.links)
    arrays = [
        pa.array(start, type=_TS), pa.array(trace_ids, type=_STR), pa.array(span_ids, type=_STR),
        pa.array(parents, type=_STR), pa.array(states, type=_STR), pa.array(names, type=_STR),
        pa.array(kinds, type=_STR), pa.array(services, type=_STR),
        pa.DictionaryArray.from_arrays(pa.array(resources, type=pa.int32()),
                                       pa.array(list(resource_json), type=_BIN)),
        pa.array(scope_names, type=_STR), pa.array(scope_versions, type=_STR),
        pa.array(attributes, type=_BIN), pa.array(durations, type=pa.uint64()),
        pa.array(statuses, type=_STR), pa.array(messages, type=_STR),
        *(_nested_columns(spans, memo.encode_attributes) if nested else (
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

    table = SPAN_INGEST_TABLE

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
