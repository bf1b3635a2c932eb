"""Request records -> one Arrow table -> one INSERT into `llm_requests`.

Why Arrow and not clickhouse-connect's row insert: the prompt embedding. The row path
flattens every Array(Float32) value into Python floats (about 30 us a row for 384
dimensions, holding the GIL the event loop needs); here each embedding is raw float32
bytes joined into one buffer, and every other column converts in pyarrow's C++ code.

No value can make a row unwritable. `llm_requests` is the ledger of every request, so a
value that does not fit its column (max_tokens -1 or 2**62 in a UInt32, temperature 1e308
in a Float32, a provider's token count sent as "12", NaN, a None where the column has no
NULL, text that is not valid Unicode) is stored clamped to the column's range, as NULL
(nullable columns) or as the column's default, and the row's `anomalies` map records the
column and the value it had. Each column is converted in one pyarrow call and checked
with a min/max kernel; only a column that fails that goes value by value (`_Slow`), so an
ordinary batch costs what it did before the checks (measured: within noise).

Items are `queued_row()` tuples (the in-process writer) or `RowChunk`s (the collector: the
rows of one frame from one gateway process, numbered from `first_seq`), which also fill
the `ingest_client` and `ingest_seq` columns that `dedupe()` uses to write a resent row
once.
"""

from __future__ import annotations

import math
import numbers
import operator
import re
import time
from array import array
from datetime import datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from clickhouse_connect.driver.client import Client

from telemetry.dedupe import without_written
from telemetry.records import INGEST_COLUMNS, REQUEST_COLUMNS, RequestRecord

_STR = pa.string()
_F32 = pa.float32()
_U32 = pa.uint32()
_U16 = pa.uint16()
_I64 = pa.int64()
_F64 = pa.float64()
_ANOMALIES = pa.map_(_STR, _STR)
_TS = pa.timestamp("us", tz="UTC")

# Arrow type of every llm_requests column (the ClickHouse types are in schema.py).
ARROW_TYPES: dict[str, pa.DataType] = {
    "timestamp": _TS,
    "status_code": _U16, "attempts": _U16,
    "fallback": pa.bool_(), "stream": pa.bool_(),
    "latency_ms": _F32, "ttft_ms": _F32, "gateway_overhead_ms": _F32,
    "cache_similarity": _F32, "guardrail_latency_ms": _F32, "temperature": _F32,
    "input_tokens": _U32, "output_tokens": _U32, "cached_tokens": _U32, "max_tokens": _U32,
    "cost_usd": _F64,
    "guardrail_actions": pa.list_(_STR),
    "prompt_embedding": pa.list_(_F32),
    "anomalies": _ANOMALIES,
    "ingest_client": pa.dictionary(pa.int32(), _STR),
    "ingest_seq": pa.uint64(),
}
ARROW_SCHEMA = pa.schema([(name, ARROW_TYPES.get(name, _STR)) for name in REQUEST_COLUMNS + INGEST_COLUMNS])

# Columns with no NULL in ClickHouse (the rest of the numbers are Nullable).
_NOT_NULL = frozenset({"timestamp", "status_code", "attempts", "fallback", "stream", "latency_ms"})
_INT_RANGE = {_U16: (0, 2 ** 16 - 1), _U32: (0, 2 ** 32 - 1)}
_FLOAT_MAX = {_F32: 3.4028234663852886e38, _F64: 1.7976931348623157e308}
# DateTime64 goes further, but the table's TTL works on DateTime (1970 .. 2106).
_TS_RANGE = (0, 4_291_747_199_999_999)
_SHOW_MAX = 64


class RowChunk:
    """Consecutive rows of one gateway process (`client`), the first numbered `first_seq`."""

    __slots__ = ("rows", "client", "first_seq")

    def __init__(self, rows: list[tuple], client: str, first_seq: int) -> None:
        self.rows = rows
        self.client = client
        self.first_seq = first_seq

    def __len__(self) -> int:
        return len(self.rows)

    def head(self, n: int) -> "RowChunk":
        return RowChunk(self.rows[:n], self.client, self.first_seq)


def show(value: Any) -> str:
    """A value as the `anomalies` map records it: short, valid UTF-8, and never free text
    (a string that is not a number is described, not copied: it could be anything)."""
    kind = type(value)
    if kind is int and value.bit_length() > 200:
        return f"<int of {value.bit_length()} bits>"
    if kind is str:
        try:
            float(value)
            text = value
        except (ValueError, OverflowError):
            return f"<str of {len(value)} chars>"
    elif kind in (int, float, bool) or value is None:
        text = repr(value)
    elif kind in (bytes, bytearray):
        return f"<{kind.__name__} of {len(value)}>"
    else:
        try:
            text = f"<{kind.__name__}> " + repr(value)[:_SHOW_MAX]
        except Exception:
            text = f"<{kind.__name__}>"
    if len(text) > _SHOW_MAX:
        text = text[:_SHOW_MAX - 3] + "..."
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class _Slow:
    """Value-by-value conversion of one column that failed the fast path; records what it
    changed in `flags` (row index -> {column: shown value})."""

    def __init__(self, name: str, flags: dict[int, dict[str, str]]) -> None:
        self.name = name
        self.flags = flags
        self.nullable = name not in _NOT_NULL

    def flag(self, i: int, value: Any) -> None:
        self.flags.setdefault(i, {})[self.name] = show(value)

    def ints(self, values, lo: int, hi: int) -> list:
        out = []
        for i, v in enumerate(values):
            kind = type(v)
            if kind is int:
                if lo <= v <= hi:
                    out.append(v)
                    continue
                out.append(lo if v < lo else hi)
            elif v is None:
                if self.nullable:
                    out.append(None)
                    continue
                out.append(lo)
            elif kind is not bool and isinstance(v, numbers.Integral):
                iv = operator.index(v)
                out.append(min(max(iv, lo), hi))
                if lo <= iv <= hi:
                    continue
            elif kind is not bool and isinstance(v, numbers.Real):
                f = float(v)
                if math.isnan(f):
                    out.append(None if self.nullable else lo)
                elif math.isinf(f):
                    out.append(hi if f > 0 else lo)
                else:
                    iv = int(f)
                    out.append(min(max(iv, lo), hi))
                    if iv == f and lo <= iv <= hi:          # 12.0: stored as given
                        continue
            elif kind is bool:
                out.append(int(v))
            else:
                out.append(None if self.nullable else lo)
            self.flag(i, v)
        return out

    def floats(self, values, bound: float) -> list:
        out = []
        for i, v in enumerate(values):
            kind = type(v)
            if v is None:
                out.append(None if self.nullable else 0.0)
                if self.nullable:
                    continue
            elif kind is not bool and isinstance(v, numbers.Real):
                try:
                    f = float(v)
                except OverflowError:                       # an int past any float
                    f = math.inf if v > 0 else -math.inf
                if math.isnan(f):
                    out.append(None if self.nullable else 0.0)
                elif f > bound or f < -bound:
                    out.append(bound if f > 0 else -bound)
                else:
                    out.append(f)
                    continue
            elif kind is bool:
                out.append(float(v))
            else:
                out.append(None if self.nullable else 0.0)
            self.flag(i, v)
        return out

    def bools(self, values) -> list:
        out = []
        for i, v in enumerate(values):
            if v is True or v is False:
                out.append(v)
                continue
            if isinstance(v, str):
                out.append(v.strip().lower() in ("true", "1", "yes"))
            elif isinstance(v, numbers.Real):
                out.append(bool(v) and not (isinstance(v, float) and math.isnan(v)))
            else:
                out.append(False)
            self.flag(i, v)
        return out

    def text(self, i: int, v: Any) -> str:
        if type(v) is str:
            try:
                v.encode("utf-8")
                return v
            except UnicodeEncodeError:
                self.flags.setdefault(i, {})[self.name] = "<invalid unicode>"
                return v.encode("utf-8", "replace").decode("utf-8")
        if isinstance(v, (bytes, bytearray)):
            try:
                return bytes(v).decode("utf-8")
            except UnicodeDecodeError:
                self.flag(i, v)
                return bytes(v).decode("utf-8", "replace")
        self.flag(i, v)
        if v is None:
            return ""
        try:
            return str(v)[:1000].encode("utf-8", "replace").decode("utf-8")
        except Exception:
            return ""

    def strings(self, values) -> list:
        return [self.text(i, v) for i, v in enumerate(values)]

    def timestamps(self, values) -> list:
        lo, hi = _TS_RANGE
        now = time.time_ns() // 1000
        out = []
        for i, v in enumerate(values):
            if type(v) is int and lo <= v <= hi:
                out.append(v)
                continue
            if isinstance(v, datetime):
                try:
                    us = epoch_us(v)
                    if lo <= us <= hi:
                        out.append(us)
                        continue
                except (OverflowError, ValueError):
                    pass
            out.append(now)          # the row stays, in a partition its TTL keeps
            self.flag(i, v)
        return out

    def actions(self, values) -> list:
        out = []
        for i, v in enumerate(values):
            if isinstance(v, (tuple, list)):
                out.append([self.text(i, a) for a in v])
            else:
                out.append([])
                self.flag(i, v)
        return out


def _fast_column(name: str, kind: pa.DataType, values: tuple) -> pa.Array | None:
    """The column in one pyarrow call, or None when some value needs `_Slow`."""
    if kind in _INT_RANGE or kind in _FLOAT_MAX or kind == _TS:
        arr = pa.array(values)                  # inferred: int64 only when every value is an int
        at = arr.type
        if arr.null_count and name in _NOT_NULL:
            return None
        if at == pa.null():
            return pa.nulls(len(values), kind)
        if kind == _TS:
            if at != _I64:
                return None
            lo, hi = _TS_RANGE
        elif kind in _INT_RANGE:
            if at != _I64:
                return None
            lo, hi = _INT_RANGE[kind]
        else:
            if at != _F64 and at != _I64:
                return None
            hi = _FLOAT_MAX[kind]
            lo = -hi
            if at == _F64 and pc.any(pc.is_nan(arr)).as_py():
                return None
        bounds = pc.min_max(arr)
        low, high = bounds["min"].as_py(), bounds["max"].as_py()
        if low is not None and (low < lo or high > hi):
            return None
        return arr.cast(kind, safe=False)
    arr = pa.array(values, type=kind)
    if arr.null_count and (kind == _STR or kind == pa.bool_() or name == "guardrail_actions"):
        return None                             # NULL in a column without NULL
    return arr


def _slow_column(name: str, kind: pa.DataType, values: tuple, flags: dict[int, dict[str, str]]) -> pa.Array:
    slow = _Slow(name, flags)
    if kind in _INT_RANGE:
        return pa.array(slow.ints(values, *_INT_RANGE[kind]), type=kind)
    if kind in _FLOAT_MAX:
        return pa.array(slow.floats(values, _FLOAT_MAX[kind]), type=kind)
    if kind == _TS:
        return pa.array(slow.timestamps(values), type=_I64).cast(_TS)
    if kind == pa.bool_():
        return pa.array(slow.bools(values), type=kind)
    if name == "guardrail_actions":
        return pa.array(slow.actions(values), type=kind)
    return pa.array(slow.strings(values), type=kind)


def _embeddings(values: tuple, flags: dict[int, dict[str, str]]) -> pa.Array:
    """list<float32> from per-row float32 bytes (or float sequences), via one contiguous
    buffer. A value that is no vector, or bytes that are not whole float32s, is stored as
    what can be read of it and flagged."""
    offsets = array("i", [0])
    chunks = []
    total = 0
    for i, v in enumerate(values):
        try:
            chunk = float32_bytes(v)
        except Exception:
            chunk = b""
            flags.setdefault(i, {})["prompt_embedding"] = show(v)
        if chunk:
            if len(chunk) & 3:
                flags.setdefault(i, {})["prompt_embedding"] = f"<{len(chunk)} bytes>"
                chunk = chunk[:len(chunk) & ~3]
            chunks.append(chunk)
            total += len(chunk) // 4
        offsets.append(total)
    flat = pa.py_buffer(b"".join(chunks))
    floats = pa.Array.from_buffers(_F32, total, [None, flat])
    return pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), floats)


def float32_bytes(values: Any) -> bytes:
    """An embedding as float32 bytes: 4 bytes a dimension while queued instead of a Python
    float object each. Takes a list, an array('f') or a numpy vector; b"" for None/empty."""
    if values is None or len(values) == 0:
        return b""
    if type(values) is bytes:
        return values
    if isinstance(values, (bytes, bytearray, memoryview)):
        return bytes(values)
    if isinstance(values, array) and values.typecode == "f":
        return values.tobytes()
    if hasattr(values, "astype"):                # numpy: no per-element Python objects
        return values.astype("float32").tobytes()
    return array("f", values).tobytes()


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_US = timedelta(microseconds=1)


def epoch_us(when: datetime) -> int:
    """Microseconds since the epoch (naive datetimes are taken as UTC)."""
    return ((when if when.tzinfo else when.replace(tzinfo=timezone.utc)) - _EPOCH) // _ONE_US


_ROW = operator.attrgetter(*REQUEST_COLUMNS)
_TIMESTAMP = REQUEST_COLUMNS.index("timestamp")
_ACTIONS = REQUEST_COLUMNS.index("guardrail_actions")
_EMBEDDING = REQUEST_COLUMNS.index("prompt_embedding")


def queued_row(rec: RequestRecord) -> tuple:
    """The record as the writer queues it: a tuple of ints, floats, strings, None, a tuple
    of strings (guardrail actions) and bytes (the float32 embedding), the timestamp in epoch
    microseconds. Plain values keep the tuple out of the garbage collector's tracking (so
    queued rows add nothing to the full collections that set the gateway's p99) and let
    the collector's frames use marshal (`telemetry.frames`). One attrgetter call: 0.5 µs
    against 2.9 µs for a generator."""
    row = _ROW(rec)
    timestamp, actions, embedding = row[_TIMESTAMP], row[_ACTIONS], row[_EMBEDDING]
    if type(timestamp) is not int or type(actions) is not tuple or type(embedding) is not bytes:
        values = list(row)
        values[_TIMESTAMP] = timestamp if type(timestamp) is int else epoch_us(timestamp)
        values[_ACTIONS] = tuple(actions)
        values[_EMBEDDING] = float32_bytes(embedding)
        row = tuple(values)
    return row


def lenient_row(rec: RequestRecord) -> tuple:
    """`queued_row()` for a record it failed on (a pipeline bug: guardrail actions that are
    no sequence, an embedding that is no vector, a timestamp that is no time). Never raises:
    whatever cannot be read is replaced (the codec's checks flag the rest)."""
    values = []
    flags = dict(rec.anomalies) if isinstance(getattr(rec, "anomalies", None), dict) else {}
    for name in REQUEST_COLUMNS:
        try:
            values.append(getattr(rec, name))
        except Exception:
            values.append(None)
    timestamp = values[_TIMESTAMP]
    if type(timestamp) is not int:
        try:
            values[_TIMESTAMP] = epoch_us(timestamp)
        except Exception:
            values[_TIMESTAMP] = time.time_ns() // 1000
            flags["timestamp"] = show(timestamp)
    actions = values[_ACTIONS]
    if type(actions) is not tuple:
        try:
            values[_ACTIONS] = tuple(actions)
        except Exception:
            values[_ACTIONS] = ()
            flags["guardrail_actions"] = show(actions)
    embedding = values[_EMBEDDING]
    try:
        values[_EMBEDDING] = float32_bytes(embedding)
    except Exception:
        values[_EMBEDDING] = b""
        flags["prompt_embedding"] = show(embedding)
    values[_ANOMALIES_AT] = {str(k): str(v) for k, v in flags.items()} or None
    return tuple(values)


_ANOMALIES_AT = REQUEST_COLUMNS.index("anomalies")
_WIDTH = len(REQUEST_COLUMNS)
_CLIENT_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
# Request columns in ARROW_SCHEMA order, with the conversion each takes.
_CONVERTED = tuple((i, field.name, field.type) for i, field in enumerate(ARROW_SCHEMA)
                   if field.name in REQUEST_COLUMNS and field.name not in ("prompt_embedding", "anomalies"))


def _fit(row: Any, i: int, flags: dict[int, dict[str, str]]) -> tuple:
    """A row of the wrong shape (not a tuple of REQUEST_COLUMNS' length), padded or cut."""
    try:
        values = list(row)
    except TypeError:
        values = []
    flags.setdefault(i, {})["row"] = f"<{len(values)} of {_WIDTH} columns>"
    defaults = RequestRecord()
    if len(values) < _WIDTH:
        values += [getattr(defaults, name) for name in REQUEST_COLUMNS[len(values):]]
    return tuple(values[:_WIDTH])


def _anomalies(given: tuple, flags: dict[int, dict[str, str]]) -> pa.Array:
    """The `anomalies` map column: what the gateway flagged merged with the codec's own."""
    n = len(given)
    if not flags and given.count(None) == n:                 # the usual batch: all empty
        offsets = pa.Array.from_buffers(pa.int32(), n + 1, [None, pa.py_buffer(bytes(4 * (n + 1)))])
        return pa.MapArray.from_arrays(offsets, pa.array([], type=_STR), pa.array([], type=_STR))
    rows = []
    slow = _Slow("anomalies", flags)
    for i, g in enumerate(given):
        merged: dict[str, str] = {}
        if isinstance(g, dict):
            for k, v in g.items():
                merged[slow.text(i, k) if type(k) is str else show(k)] = v if type(v) is str else show(v)
        elif g is not None:
            merged["anomalies"] = show(g)
        merged.update(flags.get(i, ()))
        rows.append([(k, v.encode("utf-8", "replace").decode("utf-8")) for k, v in merged.items()])
    return pa.array(rows, type=_ANOMALIES)


class RequestArrowCodec:
    """The `TableCodec` of the request-row writer."""

    table = "llm_requests"

    def encode(self, items: list) -> pa.Table:
        """`items`: `queued_row()` tuples in `REQUEST_COLUMNS` order, or `RowChunk`s of
        them. Never raises on a value (see the module docstring); `encode` failing at all
        would be a bug here, and the writer would then drop and count the batch's rows."""
        # (client, first_seq or None, rows) per run of rows from one sender
        if RowChunk not in set(map(type, items)):           # in-process rows: one run
            rows: list = items
            runs = [("", None, len(items))]
        else:
            rows = []
            runs = []
            for item in items:
                if type(item) is RowChunk:
                    rows += item.rows
                    runs.append((item.client, item.first_seq, len(item.rows)))
                else:
                    rows.append(item)
                    runs.append(("", None, 1))
        n = len(rows)
        flags: dict[int, dict[str, str]] = {}
        try:
            columns = list(zip(*rows, strict=True))
            if len(columns) != _WIDTH and n:
                raise ValueError("wrong width")
        except (ValueError, TypeError):
            rows = [r if type(r) is tuple and len(r) == _WIDTH else _fit(r, i, flags) for i, r in enumerate(rows)]
            columns = list(zip(*rows, strict=True))
        if not n:
            columns = [()] * _WIDTH
        arrays: list[pa.Array] = [None] * len(ARROW_SCHEMA)  # type: ignore[list-item]
        for i, name, kind in _CONVERTED:
            values = columns[i]
            try:
                arr = _fast_column(name, kind, values)
            except Exception:
                arr = None
            arrays[i] = arr if arr is not None else _slow_column(name, kind, values, flags)
        arrays[_EMBEDDING] = _embeddings(columns[_EMBEDDING], flags)
        arrays[_ANOMALIES_AT] = _anomalies(columns[_ANOMALIES_AT], flags)
        arrays[_WIDTH] = self._clients(runs)
        arrays[_WIDTH + 1] = self._seqs(runs)
        return pa.Table.from_arrays(arrays, schema=ARROW_SCHEMA)

    @staticmethod
    def _clients(runs: list[tuple[str, int | None, int]]) -> pa.Array:
        """One dictionary entry per distinct client (a handful per batch)."""
        index: dict[str, int] = {}
        codes = array("i")
        for client, _, count in runs:
            code = index.setdefault(client, len(index))
            codes += array("i", [code]) * count
        return pa.DictionaryArray.from_arrays(pa.array(codes, type=pa.int32()), pa.array(list(index), type=_STR))

    @staticmethod
    def _seqs(runs: list[tuple[str, int | None, int]]) -> pa.Array:
        """Each row's number at its sender (0 for in-process rows)."""
        parts = []
        for _, first, count in runs:
            if first is None:
                parts.append(pa.Array.from_buffers(pa.uint64(), count, [None, pa.py_buffer(bytes(8 * count))]))
            else:
                parts.append(pa.array(range(first, first + count), type=pa.uint64()))
        if len(parts) == 1:
            return parts[0]
        return pa.concat_arrays(parts) if parts else pa.array([], type=pa.uint64())

    def insert(self, client: Client, database: str, batch: pa.Table) -> None:
        client.insert_arrow(self.table, batch, database=database)

    def dedupe(self, client: Client, database: str, batch: pa.Table,
               ranges: list[tuple[int, int]]) -> tuple[pa.Table, list[int]]:
        """Drop from `batch` the rows in `ranges` ((offset, length) of rows resent after a
        collector died: a previous collector may have written them) that `llm_requests`
        holds already, by (ingest_client, ingest_seq). Returns the table to insert and how
        many rows of each range were there."""
        wanted: dict[str, tuple[int, int]] = {}
        picked = []
        for offset, length in ranges:
            part_clients = batch.column("ingest_client").slice(offset, length).to_pylist()
            part_seqs = batch.column("ingest_seq").slice(offset, length).to_pylist()
            picked.append((offset, part_clients, part_seqs))
            for c, q in zip(part_clients, part_seqs, strict=True):
                lo, hi = wanted.get(c, (q, q))
                wanted[c] = (min(lo, q), max(hi, q))
        present: dict[str, set[int]] = {}
        for c, (lo, hi) in wanted.items():
            if not c or not _CLIENT_ID.match(c):
                continue
            result = client.query(
                f"SELECT ingest_seq FROM `{database}`.llm_requests "
                f"WHERE ingest_client = '{c}' AND ingest_seq BETWEEN {int(lo)} AND {int(hi)}")
            present[c] = {int(r[0]) for r in result.result_rows}
        return without_written(batch, picked, lambda c, q: q in present.get(c, ()))
