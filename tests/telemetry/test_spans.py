"""Spans from a real TracerProvider land in otel_traces through the ClickHouse exporter."""

from __future__ import annotations

from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from telemetry import semconv as sc
from telemetry.tracing import trace_id_hex


def _spans(ch, db: str):
    return ch.query(
        f"SELECT SpanName, SpanKind, ServiceName, TraceId, SpanId, ParentSpanId, SpanAttributes, "
        f"Duration, StatusCode, StatusMessage, Events.Name, Events.Attributes, Links.SpanId, "
        f"ResourceAttributes, ScopeName FROM `{db}`.otel_traces ORDER BY Timestamp"
    ).named_results()


def test_request_spans_land_with_genai_attributes(make_telemetry, ch, database):
    tel = make_telemetry()
    tracer = tel.tracer
    with tracer.start_as_current_span("POST /v1/chat/completions", kind=SpanKind.SERVER) as server:
        server.set_attribute(sc.SLUICE_TENANT, "acme")
        server.set_attribute(sc.HTTP_RESPONSE_STATUS_CODE, 200)
        with tracer.start_as_current_span(sc.SPAN_CACHE_LOOKUP) as cache_span:
            cache_span.set_attribute(sc.SLUICE_CACHE_STATUS, "miss")
        with tracer.start_as_current_span(
            sc.model_span_name("chat", "gpt-4o-mini"), kind=SpanKind.CLIENT,
            links=[Link(cache_span.get_span_context())],
        ) as attempt:
            attempt.set_attributes({
                sc.GEN_AI_OPERATION_NAME: "chat",
                sc.GEN_AI_PROVIDER_NAME: sc.provider_name("openai"),
                sc.GEN_AI_REQUEST_MODEL: "gpt-4o-mini",
                sc.GEN_AI_REQUEST_TEMPERATURE: 0.2,
                sc.GEN_AI_RESPONSE_FINISH_REASONS: ["stop"],
                sc.GEN_AI_USAGE_INPUT_TOKENS: 12,
                sc.SLUICE_ATTEMPT: 1,
                sc.SLUICE_FALLBACK: False,
            })
            attempt.add_event("first_token", {"sluice.ttft_ms": 42.5})
            attempt.set_status(Status(StatusCode.ERROR, "upstream 502"))
        trace_id = trace_id_hex(server)
    assert tel.flush(timeout_s=5)

    rows = {r["SpanName"]: r for r in _spans(ch, database)}
    assert set(rows) == {"POST /v1/chat/completions", "sluice.cache.lookup", "chat gpt-4o-mini"}
    srv, cache, call = (rows["POST /v1/chat/completions"], rows["sluice.cache.lookup"],
                        rows["chat gpt-4o-mini"])
    assert {r["TraceId"] for r in rows.values()} == {trace_id}
    assert srv["ParentSpanId"] == "" and srv["SpanKind"] == "Server"
    assert cache["ParentSpanId"] == srv["SpanId"] and call["ParentSpanId"] == srv["SpanId"]
    assert call["SpanKind"] == "Client" and cache["SpanKind"] == "Internal"
    assert srv["ServiceName"] == "sluice" and srv["ResourceAttributes"]["service.name"] == "sluice"
    assert srv["ScopeName"] == "sluice"
    assert srv["SpanAttributes"] == {"sluice.tenant": "acme", "http.response.status_code": "200"}
    attrs = call["SpanAttributes"]
    assert attrs["gen_ai.request.model"] == "gpt-4o-mini"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.temperature"] == "0.2"
    assert attrs["gen_ai.response.finish_reasons"] == '["stop"]'
    assert attrs["gen_ai.usage.input_tokens"] == "12"
    assert attrs["sluice.fallback"] == "false"
    assert (call["StatusCode"], call["StatusMessage"]) == ("Error", "upstream 502")
    assert call["Events.Name"] == ["first_token"]
    assert call["Events.Attributes"] == [{"sluice.ttft_ms": "42.5"}]
    assert call["Links.SpanId"] == [cache["SpanId"]]
    assert srv["Duration"] >= call["Duration"] > 0
    # The collector schema's trace-id lookup view is fed too.
    lookup = ch.query(f"SELECT count() FROM `{database}`.otel_traces_trace_id_ts "
                      f"WHERE TraceId = %(t)s", parameters={"t": trace_id}).result_rows
    assert lookup[0][0] >= 1


def test_incoming_traceparent_is_honoured(make_telemetry, ch, database):
    tel = make_telemetry()
    parent_trace, parent_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    headers = [(b"host", b"x"), (b"traceparent", f"00-{parent_trace}-{parent_span}-01".encode())]
    with tel.tracer.start_as_current_span("POST /v1/messages", kind=SpanKind.SERVER,
                                          context=tel.extract_context(headers)) as span:
        assert trace_id_hex(span) == parent_trace
    # An unsampled caller: the span is not recorded (ParentBased sampler).
    unsampled = {"Traceparent": f"00-{'1' * 32}-{parent_span}-00"}
    with tel.tracer.start_as_current_span("POST /v1/messages",
                                          context=tel.extract_context(unsampled)):
        pass
    # A malformed header starts a fresh trace instead of failing.
    bad = tel.extract_context({"traceparent": "zz"})
    with tel.tracer.start_as_current_span("bad", context=bad) as s:
        assert trace_id_hex(s) != "0" * 32
    assert tel.flush(timeout_s=5)
    rows = ch.query(f"SELECT SpanName, TraceId, ParentSpanId FROM `{database}`.otel_traces "
                    f"ORDER BY SpanName").result_rows
    assert ("POST /v1/messages", parent_trace, parent_span) in rows
    assert all(r[1] != "1" * 32 for r in rows)
    assert len(rows) == 2


def test_credentials_on_spans_are_scrubbed(make_telemetry, ch, database):
    tel = make_telemetry()
    secret = "sk-live-0123456789abcdefSECRET"
    with tel.tracer.start_as_current_span("s") as span:
        span.set_attribute("http.request.header.authorization", f"Bearer {secret}")
        span.set_attribute("http.request.header.x-api-key", secret)
        span.set_attribute("upstream.Api_Key", secret)
        span.set_attribute("note", f"bearer {secret}")
        span.add_event("retry", {"proxy-authorization": secret})
        span.set_attribute("gen_ai.usage.output_tokens", 7)   # "token" is not a secret
    assert tel.flush(timeout_s=5)
    leaked = ch.query(
        f"SELECT count() FROM `{database}`.otel_traces WHERE "
        f"arrayExists(v -> position(v, %(s)s) > 0, mapValues(SpanAttributes)) OR "
        f"arrayExists(m -> arrayExists(v -> position(v, %(s)s) > 0, mapValues(m)), "
        f"Events.Attributes)", parameters={"s": secret}).result_rows[0][0]
    assert leaked == 0
    attrs = ch.query(f"SELECT SpanAttributes FROM `{database}`.otel_traces").result_rows[0][0]
    assert attrs["http.request.header.authorization"] == "[REDACTED]"
    assert attrs["gen_ai.usage.output_tokens"] == "7"


def test_spans_are_counted_in_metrics(make_telemetry):
    tel = make_telemetry()
    for _ in range(5):
        with tel.tracer.start_as_current_span("x"):
            pass
    assert tel.flush(timeout_s=5)
    body, content_type = tel.metrics.render()
    assert content_type.startswith("text/plain")
    assert b'sluice_telemetry_rows_written_total{queue="spans"} 5.0' in body


def test_processor_queue_overflow_is_counted():
    """Spans the SDK's BatchSpanProcessor itself drops are counted, not only logged."""
    import threading

    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from telemetry.tracing import build_tracer_provider

    release = threading.Event()

    class Stuck(SpanExporter):
        def export(self, spans):
            release.wait(5)
            return SpanExportResult.SUCCESS

    dropped = []
    provider, _ = build_tracer_provider(
        service_name="t", sample_ratio=1.0, exporters={"stuck": Stuck()}, max_queue_size=10,
        max_export_batch_size=5, schedule_delay_s=5.0,
        on_drop=lambda name, n: dropped.append(n) if name == "stuck" else None)
    tracer = provider.get_tracer("t")
    for _ in range(40):
        with tracer.start_as_current_span("x"):
            pass
    release.set()
    provider.shutdown()
    # 10 queued, at most one batch of 5 taken by the stuck worker: the rest were dropped.
    assert 25 <= sum(dropped) <= 30


def test_span_times_keep_nanoseconds(make_telemetry, ch, database):
    import time
    tel = make_telemetry()
    t0 = time.time_ns() // 1_000_000_000 * 1_000_000_000 + 123_456_789   # recent: TTL
    span = tel.tracer.start_span("timed", start_time=t0)
    span.add_event("tick", timestamp=t0 + 76_543_212)
    span.end(end_time=t0 + 200_000_001)
    assert tel.flush(timeout_s=5)
    row = ch.query(f"SELECT toUnixTimestamp64Nano(Timestamp), Duration, "
                   f"arrayMap(t -> toUnixTimestamp64Nano(t), Events.Timestamp) "
                   f"FROM `{database}`.otel_traces").result_rows
    assert row == [(t0, 200_000_001, [t0 + 76_543_212])]


def test_attribute_json_takes_the_fast_path_only_when_it_is_safe():
    import orjson

    from telemetry.span_exporter import REDACTED, AttributeEncoder, AttributeJson

    to_json = AttributeJson(AttributeEncoder())
    plain = {"gen_ai.request.model": "m1", "gen_ai.usage.input_tokens": 12, "sluice.fallback": False,
             "gen_ai.response.finish_reasons": ("stop",), "gen_ai.request.temperature": 0.2}
    assert orjson.loads(to_json(plain)) == {**plain, "gen_ai.response.finish_reasons": ["stop"]}
    # Values ClickHouse maps to text later; here they stay JSON values.
    assert orjson.loads(to_json({"upstream.api_key": "sk-1", "note": "x"})) == {"upstream.api_key": REDACTED,
                                                                              "note": "x"}
    assert orjson.loads(to_json({"gen_ai.request.model": "Bearer sk-2"})) == {"gen_ai.request.model": REDACTED}
    assert orjson.loads(to_json({"note": "a bearer token in the middle is text"}))["note"].startswith("a bearer")
    # A value orjson refuses: the encoder's strings instead.
    assert orjson.loads(to_json({"big": 1 << 70})) == {"big": str(1 << 70)}
    assert to_json({}) == b"{}"
    # The verdict on a combination of keys is remembered, both ways.
    for _ in range(2):
        assert orjson.loads(to_json({"upstream.api_key": "sk-3", "note": "y"}))["upstream.api_key"] == REDACTED
        assert orjson.loads(to_json(plain))["gen_ai.request.model"] == "m1"


def test_span_rows_are_the_same_through_the_sdks_public_properties(monkeypatch):
    """The conversion reads ReadableSpan's fields directly where the SDK has them; through
    the public properties (the fallback) every column comes out the same."""
    from operator import attrgetter

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from telemetry import span_exporter as se

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("t", "1.2")
    with tracer.start_as_current_span("parent", kind=SpanKind.SERVER) as parent:
        with tracer.start_as_current_span("child", kind=SpanKind.CLIENT,
                                          links=[Link(parent.get_span_context(), {"l": 1})]) as child:
            child.set_attribute("gen_ai.request.model", "m1")
            child.add_event("retry", {"attempt": 2})
            child.set_status(Status(StatusCode.ERROR, "upstream_5xx"))
    spans = memory.get_finished_spans()

    direct = se.spans_to_arrow(spans, se._ResourceMemo())
    monkeypatch.setattr(se, "_span_fields", attrgetter(*se._SPAN_FIELDS))
    public = se.spans_to_arrow(spans, se._ResourceMemo())
    assert direct.equals(public)
    child_row, parent_row = direct.to_pylist()
    assert (child_row["SpanKind"], child_row["StatusCode"], child_row["StatusMessage"]) == \
        ("Client", "Error", "upstream_5xx")
    assert child_row["ParentSpanId"] == parent_row["SpanId"] and parent_row["ParentSpanId"] == ""
    assert child_row["Events.Name"] == ["retry"] and child_row["Links.SpanId"] == [parent_row["SpanId"]]
    assert (child_row["ScopeName"], child_row["ScopeVersion"]) == ("t", "1.2")


def test_inline_processor_exports_batches_on_the_callers_thread():
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
    from opentelemetry.trace import SpanContext, TraceFlags

    from telemetry.tracing import InlineBatchSpanProcessor

    class Exporter(SpanExporter):
        def __init__(self) -> None:
            self.batches: list[int] = []

        def export(self, spans):
            self.batches.append(len(spans))
            if len(self.batches) == 2:
                raise RuntimeError("a broken exporter must not reach the producer")
            return SpanExportResult.SUCCESS

    def span(i: int, sampled: bool = True) -> ReadableSpan:
        flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
        return ReadableSpan(f"s{i}", SpanContext(i + 1, i + 1, False, flags), start_time=1, end_time=2)

    exporter = Exporter()
    processor = InlineBatchSpanProcessor(exporter, max_export_batch_size=4)
    processor.on_end_batch([span(i) for i in range(10)] + [span(99, sampled=False)])
    assert exporter.batches == [4, 4, 2]
    processor.on_end(span(11))                           # a live span: exported at once
    assert exporter.batches[-1] == 1
    processor.shutdown()
    processor.on_end(span(12))
    assert len(exporter.batches) == 4


def test_the_gateway_does_not_load_pandas():
    """pyarrow imports pandas (~45 MB of RSS) on its first pa.array() call: nothing the
    gateway process imports may make that call at import time."""
    import subprocess
    import sys

    code = "import sys, gateway.app, gateway.cli; print('pandas' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
