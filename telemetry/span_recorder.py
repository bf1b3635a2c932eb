"""A request's trace as plain facts, turned into SDK spans wherever they are exported.

The gateway knows every step's start and end once a request is over, so it does not need
the SDK's live-span machinery (a `Span` per step, a lock and a `BoundedAttributes` copy per
span, context attach/detach). It describes the finished trace as `TraceFacts` (tuples of
ints, strings and one attribute dict per span: cheap to build and to pickle), and
`SpanRecorder` builds the SDK's own `ReadableSpan` objects from them and hands them to the
`BatchSpanProcessor`s, so the ClickHouse and OTLP exporters see ordinary SDK spans. With
the collector process (`telemetry.collector`) that building happens there, off the
gateway's event loop and GIL.

Measured on this machine: a server span plus one child through the Tracer API cost 28.8 µs;
built as ReadableSpans, 4.1 µs (docs/telemetry.md, "Cost of tracing").

Sampling is decided once per request when it starts (`TraceStarter`): parent-based, so an
incoming `traceparent` decides, else `sample_ratio`.
"""

from __future__ import annotations

import ipaddress
import logging
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    get_current_span,
)

from telemetry import semconv as sc
from telemetry.records import REQUEST_COLUMNS
from telemetry.server_span import attempt_span_attributes, server_span_attributes
from telemetry.tracing import extract_context

_log = logging.getLogger("sluice.telemetry")
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_OK = Status(StatusCode.UNSET)
_OPERATION = REQUEST_COLUMNS.index("operation")
_TRACE_ID_LIMIT = TraceIdRatioBased.TRACE_ID_LIMIT


@dataclass(frozen=True, slots=True)
class TraceIds:
    """The identity of a request's server span, fixed when the request starts."""

    trace_id: int
    span_id: int
    parent: SpanContext | None
    sampled: bool
    link: SpanContext | None = None     # an untrusted caller's span: linked to, not joined

    @property
    def trace_id_hex(self) -> str:
        return format(self.trace_id, "032x")

    @property
    def span_id_hex(self) -> str:
        return format(self.span_id, "016x")


# A plain tuple, not a NamedTuple or dataclass: it is built on the event loop and pickled
# to the collector for every sampled request, and a plain tuple builds ~10x and pickles
# ~1.5x faster. It carries only what the request row lacks; the spans' attributes are
# derived from the row where the spans are built.
TraceFacts = tuple
"""A sampled request's trace, in this order:

    trace_id, span_id          the server span (ids fixed when the request started)
    parent_span_id, remote     the caller's span when the request joined a trace, else None
    name, start_ns, end_ns     the server span ("POST /v1/chat/completions")
    error                      set: the server span's status is ERROR with this description
    extras                     server span attributes the row lacks (dict or None)
    steps                      ((name, start_ns, end_ns, attributes or None), ...): auth,
                               guardrails, cache lookup
    attempts                   ((deployment, provider_type, upstream_model, outcome, status,
                               start_ns, end_ns), ...): one CLIENT span each
    stream_start_ns            first byte to the caller of a stream (a "sluice.stream" span)
    link                       (trace_id, span_id) of an untrusted caller's `traceparent`,
                               a link on the server span; else None
"""


class TraceStarter:
    """Ids and the sampling decision for each new request (honours `traceparent`)."""

    def __init__(self, sample_ratio: float, *, enabled: bool = True,
                 trusted_sources: Sequence[str] = ("*",)) -> None:
        root = TraceIdRatioBased(sample_ratio)
        self.sampler: Sampler = ParentBased(root)
        self._root_bound = root.bound           # the SDK's own threshold, for the fast path
        self.enabled = enabled
        self._random = random.Random()
        self._trust_all = "*" in trusted_sources
        self._trusted = tuple(ipaddress.ip_network(s, strict=False) for s in trusted_sources if s != "*")

    def trusts(self, peer: str | None) -> bool:
        """Whether a `traceparent` from `peer` (the client address) may set our trace."""
        if self._trust_all:
            return True
        try:
            address = ipaddress.ip_address(peer or "")
        except ValueError:
            return False                        # a unix socket or no peer: not a known source
        return any(address in network for network in self._trusted)

    def begin(self, headers: Iterable[tuple[bytes, bytes]] | Mapping[str, str], name: str,
              peer: str | None = None) -> TraceIds:
        span_id = self._random.getrandbits(64) or 1
        if not isinstance(headers, Mapping) and not any(k == b"traceparent" for k, _ in headers):
            return self._root(span_id)          # most requests: a new root trace
        parent_ctx = extract_context(headers)
        parent = get_current_span(parent_ctx).get_span_context()
        if parent.is_valid and not self.trusts(peer):
            # A caller cannot pick our trace id or force sampling; its span is linked.
            return self._root(span_id, link=parent)
        trace_id = parent.trace_id if parent.is_valid else (self._random.getrandbits(128) or 1)
        known_parent = parent if parent.is_valid else None
        if not self.enabled:
            return TraceIds(trace_id, span_id, known_parent, False)
        decision = self.sampler.should_sample(parent_ctx, trace_id, name, SpanKind.SERVER)
        return TraceIds(trace_id, span_id, known_parent, decision.decision.is_sampled())

    def _root(self, span_id: int, link: SpanContext | None = None) -> TraceIds:
        # The ratio sampler's decision, without building the contexts and SamplingResult
        # the general path does (~2 µs).
        trace_id = self._random.getrandbits(128) or 1
        sampled = self.enabled and (trace_id & _TRACE_ID_LIMIT) < self._root_bound
        return TraceIds(trace_id, span_id, None, sampled, link)


class SpanRecorder:
    """Builds `ReadableSpan`s from `TraceFacts` and the request row, and ends them into
    the span processors (in one batch where a processor takes batches)."""

    def __init__(self, resource: Resource | None, processors: Sequence[SpanProcessor]):
        self._resource = resource
        self._processors = tuple(processors)
        self._scope = InstrumentationScope("sluice")
        self._random = random.Random()

    def record(self, trace: TraceFacts, row: tuple) -> int:
        """End every span of `trace` into the processors; `row` is the request's
        `llm_requests` row (`queued_row()` order). Returns how many spans."""
        return self.record_many(((row, trace),))

    def record_many(self, entries: Iterable[tuple[tuple, TraceFacts | None]],
                    on_invalid: Callable[[int], None] | None = None) -> int:
        """`record()` for (row, trace) pairs (a trace of None: not sampled), ending all of
        their spans together. Returns how many spans. A trace whose facts cannot be built
        (a bug where they were made) is left out and its spans reported to `on_invalid`."""
        spans: list[ReadableSpan] = []
        for row, trace in entries:
            if trace is not None:
                before = len(spans)
                try:
                    self._build(trace, row, spans)
                except Exception:
                    del spans[before:]
                    try:
                        count = span_count(trace)
                    except Exception:
                        count = 1
                    if on_invalid is not None:
                        on_invalid(count)
                    _log.exception("telemetry: cannot build the spans of a trace; dropped")
        for processor in self._processors:
            on_end_batch = getattr(processor, "on_end_batch", None)
            if on_end_batch is not None:
                on_end_batch(spans)
            else:
                for span in spans:
                    processor.on_end(span)
        return len(spans)

    def _build(self, trace: TraceFacts, row: tuple, out: list[ReadableSpan]) -> None:
        (trace_id, span_id, parent_span_id, parent_remote, name, start_ns, end_ns, error, extras,
         steps, attempts, stream_start_ns, link) = trace
        outer = (SpanContext(trace_id, parent_span_id, parent_remote, _SAMPLED)
                 if parent_span_id is not None else None)
        server = SpanContext(trace_id, span_id, False, _SAMPLED)
        span = self._span
        server_span = span(name, server, outer, SpanKind.SERVER, start_ns, end_ns,
                           server_span_attributes(row, extras), error,
                           (Link(SpanContext(link[0], link[1], True)),) if link is not None else ())
        out.append(server_span)
        for step_name, t0, t1, attrs in steps:
            out.append(span(step_name, self._child(trace_id), server, SpanKind.INTERNAL, t0, t1, attrs, None))
        operation = row[_OPERATION]
        for n, (deployment, provider_type, model, outcome, status, t0, t1) in enumerate(attempts, 1):
            failed = outcome != "ok"
            out.append(span(sc.model_span_name(operation, model), self._child(trace_id), server, SpanKind.CLIENT,
                            t0, t1, attempt_span_attributes(operation, n, deployment, provider_type, model, outcome,
                                                            status), outcome if failed else None))
        if stream_start_ns is not None:
            out.append(span("sluice.stream", self._child(trace_id), server, SpanKind.INTERNAL, stream_start_ns,
                            end_ns, None, None))

    def _child(self, trace_id: int) -> SpanContext:
        return SpanContext(trace_id, self._random.getrandbits(64) or 1, False, _SAMPLED)

    def _span(self, name: str, context: SpanContext, parent: SpanContext | None, kind: SpanKind,
              start_ns: int, end_ns: int, attributes: dict[str, Any] | None, error: str | None,
              links: Sequence[Link] = ()) -> ReadableSpan:
        return ReadableSpan(
            name, context, parent, self._resource, attributes or {}, kind=kind, start_time=start_ns,
            end_time=end_ns, status=Status(StatusCode.ERROR, error) if error else _OK,
            instrumentation_scope=self._scope, links=links)


def span_count(trace: TraceFacts) -> int:
    """How many spans `SpanRecorder.record()` makes of `trace` (for drop accounting)."""
    return 1 + len(trace[9]) + len(trace[10]) + (trace[11] is not None)
