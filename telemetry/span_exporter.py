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

import functools
import logging
import re
from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from clickhouse_connect.driver.client import Client
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, StatusCode

from telemetry.batch_writer import BatchWriter, Ticket
from telemetry.dedupe import without_written

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


def _as_dict(attributes: Any) -> dict:
    """A plain dict of an attribute mapping. The SDK's BoundedAttributes (behind a
    MappingProxyType on spans) iterates through Python-level __getitem__ calls; its plain
    `_dict`, when present, is several times faster to walk. Falls back to a copy through
    the public Mapping interface if the SDK's internals change."""
    if type(attributes) is dict:
        return attributes
    inner = getattr(attributes, "_dict", None)
    return inner if isinstance(inner, dict) else dict(attributes)


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
        is_secret = self.is_secret
        for key, value in _as_dict(attributes).items():
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
            out[key] = REDACTED if is_secret(key) else text
        return out

    def is_secret(self, key: str) -> bool:
        """Whether `key` names a credential (memoised per key, bounded)."""
        secret = self._secret_key.get(key)
        if secret is None:
            secret = _SECRET_NAME.search(key) is not None
            if len(self._secret_key) < self._MEMO_MAX:
                self._secret_key[key] = secret
        return secret


class AttributeJson:
    """A span's attributes as one JSON object (bytes) for `otel_traces_ingest`.

    orjson writes the whole mapping in C; the table's view stringifies the values in
    ClickHouse (numbers and booleans as text, arrays as JSON), as the Collector's exporter
    stores them. The slow path (`AttributeEncoder`, then JSON) is taken only when the
    mapping holds a key naming a credential, a value that could be a bearer token, or a
    value orjson rejects. Keys are few and repeat, and so do their combinations (a span
    kind's attribute set): the key check is memoised per tuple of keys.
    """

    _SHAPES_MAX = 4096

    def __init__(self, encoder: AttributeEncoder) -> None:
        self.encode = encoder
        self._shapes: dict[tuple, bool] = {}      # tuple of keys -> no credential among them

    def __call__(self, attributes: Any) -> bytes:
        if not attributes:
            return b"{}"
        items = _as_dict(attributes)
        keys = tuple(items)
        safe = self._shapes.get(keys)
        if safe is None:
            safe = self._check(keys)
        if not safe:
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

    def _check(self, keys: tuple) -> bool:
        """Whether no key names a credential (the verdict remembered for the combination)."""
        safe = all(isinstance(key, str) and not self.encode.is_secret(key) for key in keys)
        if len(self._shapes) < self._SHAPES_MAX:
            self._shapes[keys] = safe
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
_U64 = pa.uint64()


@functools.cache
def _empty_values() -> tuple[pa.Array, ...]:
    """Empty value arrays of the Events.*/Links.* columns. Built on first use: the first
    pa.array() call imports pandas (~45 MB), which the gateway process never needs."""
    return tuple(pa.array([], type=field.type.value_type) for field in list(SPAN_ARROW_SCHEMA)[15:])


# What the conversion reads from each span, in one C call per span. The SDK's properties
# are Python functions (one call per field per span, about a third of the conversion);
# the attributes they return are set once in ReadableSpan.__init__, so read those when
# this SDK has them (checked on a probe span at import, else the public properties).
_SPAN_FIELDS = ("context", "parent", "name", "kind", "start_time", "end_time", "status",
                "resource", "instrumentation_scope", "attributes", "events", "links")


def _span_fields_getter() -> Callable[[ReadableSpan], tuple]:
    public = attrgetter(*_SPAN_FIELDS)
    private = attrgetter(*(f"_{name}" for name in _SPAN_FIELDS))
    probe = ReadableSpan("probe", SpanContext(1, 2, False), SpanContext(1, 3, False), Resource({"a": 1}),
                         {"k": "v"}, kind=SpanKind.SERVER, start_time=5, end_time=7,
                         instrumentation_scope=InstrumentationScope("s"))
    try:
        fast = private(probe)
    except AttributeError:
        return public
    slow = public(probe)
    same = fast[:9] == slow[:9] and dict(fast[9]) == dict(slow[9]) and fast[10:] == slow[10:]
    return private if same else public


_span_fields = _span_fields_getter()
# SpanKind/StatusCode hash through a Python-level Enum.__hash__; members are singletons,
# so look them up by identity.
_KIND_BY_ID = {id(kind): name for kind, name in _KIND.items()}
_STATUS_BY_ID = {id(code): name for code, name in _STATUS.items()}


def _zeros(n: int) -> pa.Array:
    return pa.Array.from_buffers(_I32, n, [None, pa.py_buffer(bytes(4 * n))])


def spans_to_arrow(spans: Sequence[ReadableSpan], memo: _ResourceMemo) -> pa.RecordBatch:
    """`otel_traces_ingest` rows for `spans` as one record batch, built column by column."""
    n = len(spans)
    if n == 0:
        return pa.RecordBatch.from_pylist([], schema=SPAN_ARROW_SCHEMA)
    (contexts, parents, names, kinds, starts, ends, statuses, resources, scopes, attributes,
     events, links) = zip(*map(_span_fields, spans), strict=True)
    starts = [t or 0 for t in starts]
    first = resources[0]
    if all(r is first for r in resources):          # one tracer provider: the usual case
        rjson, service = memo.get(first)
        resource_column = pa.DictionaryArray.from_arrays(_zeros(n), pa.array([rjson], type=_BIN))
        services = pa.array([service] * n, type=_STR)
    else:
        pairs = [memo.get(r) for r in resources]
        index: dict[bytes, int] = {}
        codes = [index.setdefault(rjson, len(index)) for rjson, _ in pairs]
        resource_column = pa.DictionaryArray.from_arrays(pa.array(codes, type=_I32),
                                                         pa.array(list(index), type=_BIN))
        services = pa.array([service for _, service in pairs], type=_STR)
    arrays = [
        pa.array(starts, type=_TS),
        pa.array([format(c.trace_id, "032x") for c in contexts], type=_STR),
        pa.array([format(c.span_id, "016x") for c in contexts], type=_STR),
        pa.array(["" if p is None else format(p.span_id, "016x") for p in parents], type=_STR),
        pa.array([c.trace_state.to_header() if c.trace_state else "" for c in contexts], type=_STR),
        pa.array(names, type=_STR),
        pa.array([_KIND_BY_ID.get(id(k), "Unspecified") for k in kinds], type=_STR),
        services,
        resource_column,
        pa.array([s.name if s else "" for s in scopes], type=_STR),
        pa.array([(s.version or "") if s else "" for s in scopes], type=_STR),
        # The SDK's BoundedAttributes itself where a span has one (AttributeJson unwraps it).
        pa.array(list(map(memo.attributes_json, attributes)), type=_BIN),
        pa.array([end - begin if end is not None and end > begin else 0
                  for begin, end in zip(starts, ends, strict=True)], type=_U64),
        pa.array([_STATUS_BY_ID.get(id(s.status_code), "Unset") for s in statuses], type=_STR),
        pa.array([s.description or "" for s in statuses], type=_STR),
    ]
    if any(events) or any(links):
        arrays += _nested_columns(spans, memo.encode_attributes)
    else:                                           # no span has events or links
        offsets = _zeros(n + 1)
        arrays += [pa.ListArray.from_arrays(offsets, values) for values in _empty_values()]
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

    def dedupe(self, client: Client, database: str, batch: pa.Table,
               ranges: list[tuple[int, int]]) -> tuple[pa.Table, list[int]]:
        """Drop from `batch` the spans in `ranges` (resent after a collector died) whose
        request's server span is in `otel_traces` already: a request's spans are built
        from the same facts and go to the writer in one block, so they were written together
        or not at all. A span belongs to the request of its server span: its own id for the
        server span, its parent's for the steps and attempts (children of the server span).
        Returns the table to insert and how many spans of each range were there."""
        picked = []
        trace_ids: set[str] = set()
        low, high = None, None
        for offset, length in ranges:
            part = batch.slice(offset, length)
            traces = part.column("TraceId").to_pylist()
            spans = part.column("SpanId").to_pylist()
            parents = part.column("ParentSpanId").to_pylist()
            kinds = part.column("SpanKind").to_pylist()
            owners = [span if kind == "Server" else parent for span, parent, kind in zip(spans, parents, kinds)]
            picked.append((offset, traces, owners))
            trace_ids.update(t for t in traces if _HEX.match(t))
            if length:
                bounds = pc.min_max(part.column("Timestamp").cast(pa.int64()))
                lo, hi = bounds["min"].as_py(), bounds["max"].as_py()
                low = lo if low is None else min(low, lo)
                high = hi if high is None else max(high, hi)
        present: set[tuple[str, str]] = set()
        ordered = sorted(trace_ids)
        margin = 3600 * 10 ** 9
        for i in range(0, len(ordered), 2000):
            listed = ", ".join(f"'{t}'" for t in ordered[i:i + 2000])
            result = client.query(
                f"SELECT TraceId, SpanId FROM `{database}`.otel_traces WHERE SpanKind = 'Server' "
                f"AND Timestamp BETWEEN fromUnixTimestamp64Nano({int(low) - margin}) "
                f"AND fromUnixTimestamp64Nano({int(high) + margin}) AND TraceId IN ({listed})")
            present.update((r[0], r[1]) for r in result.result_rows)
        return without_written(batch, picked, lambda trace, owner: (trace, owner) in present)


_HEX = re.compile(r"^[0-9a-f]{32}$")


class ClickHouseSpanExporter(SpanExporter):
    """A SpanExporter whose `export()` never does I/O: it feeds a bounded BatchWriter."""

    def __init__(self, writer: BatchWriter[pa.RecordBatch]) -> None:
        self._writer = writer
        self._memo = _ResourceMemo()     # export() calls are serialised by the processor
        # Where this export's spans are accounted (the collector sets it around each frame's
        # spans, `TelemetrySink.submit_many`); None: the writer's listener.
        self.ticket: Ticket | None = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        ticket = self.ticket
        keep = min(len(spans), self._writer.free_rows)
        if keep < len(spans):
            self._writer.count_dropped(len(spans) - keep, "queue_full", ticket)
        if keep == 0:
            return SpanExportResult.FAILURE
        try:
            block = spans_to_arrow(spans[:keep], self._memo)
        except Exception:
            block = self._salvage(spans[:keep], ticket)
            if block is None:
                return SpanExportResult.FAILURE
        accepted = self._writer.put(block, rows=block.num_rows, ticket=ticket)
        return SpanExportResult.SUCCESS if accepted and keep == len(spans) \
            else SpanExportResult.FAILURE

    def _salvage(self, spans: Sequence[ReadableSpan], ticket: Ticket | None) -> pa.RecordBatch | None:
        """Convert span by span, dropping (and counting) the ones that fail."""
        good = []
        for span in spans:
            try:
                spans_to_arrow([span], self._memo)
                good.append(span)
            except Exception:
                log.exception("telemetry: cannot convert span %r; dropped", span.name)
        self._writer.count_dropped(len(spans) - len(good), "invalid", ticket)
        return spans_to_arrow(good, self._memo) if good else None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._writer.flush(timeout_millis / 1000)

    def shutdown(self) -> None:
        """Nothing to do: the writer's owner (Telemetry) shuts it down with its own
        deadline, after the BatchSpanProcessor has handed over its last spans."""
