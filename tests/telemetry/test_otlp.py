"""The optional OTLP/HTTP exporter sends the same spans to an OTLP receiver."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

from telemetry import OtlpConfig
from telemetry.otlp import build_otlp_exporter


@pytest.fixture
def otlp_receiver():
    """A minimal OTLP/HTTP endpoint on a free port: records each POST's path, headers, body."""
    received: list[tuple[str, dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, dict(self.headers), body))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1/traces", received
    server.shutdown()
    server.server_close()


def test_spans_go_to_otlp_and_clickhouse(make_telemetry, otlp_receiver, ch, database):
    endpoint, received = otlp_receiver
    tel = make_telemetry(otlp={"endpoint": endpoint, "headers": {"x-tenant": "ops"}})
    with tel.tracer.start_as_current_span("POST /v1/chat/completions") as span:
        span.set_attribute("gen_ai.request.model", "m1")
    assert tel.flush(timeout_s=5)

    assert received, "the OTLP receiver got nothing"
    path, headers, body = received[0]
    assert path == "/v1/traces" and headers.get("x-tenant") == "ops"
    req = ExportTraceServiceRequest.FromString(body)
    spans = [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert [s.name for s in spans] == ["POST /v1/chat/completions"]
    assert spans[0].attributes[0].key == "gen_ai.request.model"
    assert ch.query(f"SELECT count() FROM `{database}`.otel_traces").result_rows[0][0] == 1


def test_otlp_config_is_validated():
    with pytest.raises(ValueError, match="http"):
        OtlpConfig(endpoint="grpc://collector:4317")
    exporter = build_otlp_exporter(OtlpConfig(endpoint="http://collector:4318/v1/traces"))
    exporter.shutdown()
