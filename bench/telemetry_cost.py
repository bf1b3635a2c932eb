"""Where tracing's CPU goes, piece by piece: `python -m bench.telemetry_cost [--requests N]`.

Builds N requests shaped like the load test's (a bench prompt, one upstream attempt, the
sampled trace) and times, single-threaded, each step they take on their way to ClickHouse:
on the gateway side encoding each entry for the collector (on the event loop), in the
collector decoding a frame, building the SDK spans and handing them to the inline span
processor, Arrow encoding of spans and rows, and the embedded engine's inserts (chDB, in a
temporary directory, merges included). Figures are CPU µs per request; docs/telemetry.md
("Cost of tracing") quotes them.
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from collections.abc import Callable, Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from telemetry.clickhouse import open_client
from telemetry.frames import pack_entry, recv_frame, send_data
from telemetry.records import RequestRecord
from telemetry.request_codec import RequestArrowCodec, queued_row
from telemetry.schema import migrate
from telemetry.span_exporter import SpanArrowCodec, _ResourceMemo, spans_to_arrow
from telemetry.span_recorder import SpanRecorder, TraceFacts
from telemetry.tracing import build_tracer_provider

PROMPT = ("Request {i}: summarise the main trade-offs between latency, throughput and cost when serving a "
          "large language model behind a gateway, in three short bullet points.")


def request(i: int) -> tuple[tuple, TraceFacts]:
    """One request's row and trace facts, as the gateway hands them to the collector."""
    t0 = time.time_ns()
    rec = RequestRecord(
        request_id=os.urandom(12).hex(), trace_id=f"{i + 1:032x}", span_id=f"{i + 7:016x}", tenant="default",
        operation="chat", api_format="openai", public_model="bench-model", provider="mock", provider_type="openai",
        deployment="mock/m1", upstream_model="m1", response_model="m1", system_fingerprint="fp_mock",
        status_code=200, attempts=1, latency_ms=2.1, gateway_overhead_ms=0.3, input_tokens=30, output_tokens=16,
        cached_tokens=0, cost_usd=0.0, cache_status="off", prompt_text=PROMPT.format(i=i),
        completion_text="mock answer " * 8, finish_reason="stop", max_tokens=256, user_agent="wrk")
    trace = (i + 1, i + 7, None, False, "POST /v1/chat/completions", t0, t0 + 2_000_000, None,
             {"gen_ai.response.id": f"chatcmpl-{i}"}, (),
             (("mock/m1", "openai", "m1", "ok", 200, t0 + 100_000, t0 + 1_900_000),), None, None)
    return queued_row(rec), trace


class _Keep(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


class _Wire:
    """A socket stand-in that keeps what is sent and hands it back to recv_frame()."""

    def __init__(self, data: bytes = b"") -> None:
        self.data = bytearray(data)
        self._read = 0

    def sendmsg(self, buffers) -> int:
        size = 0
        for buffer in buffers:
            self.data += buffer
            size += len(buffer)
        return size

    def sendall(self, data: bytes) -> None:
        self.data += data

    def recv_into(self, view, size: int) -> int:
        chunk = self.data[self._read:self._read + size]
        view[:len(chunk)] = chunk
        self._read += len(chunk)
        return len(chunk)


def _frame(packed: list) -> bytes:
    """The bytes `send_data` puts on the socket for `packed`."""
    wire = _Wire()
    send_data(wire, packed)
    return bytes(wire.data)


def _decode(frame: bytes) -> list:
    return recv_frame(_Wire(frame))[1]


def _cpu_us(n: int, work: Callable[[], object], clock: Callable[[], float] = time.thread_time) -> float:
    start = clock()
    work()
    return (clock() - start) / n * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.telemetry_cost", description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000)
    n = parser.parse_args(argv).requests

    entries = [request(i) for i in range(n)]
    rows = [row for row, _ in entries]
    gc.collect()
    gc.freeze()                          # as the collector does after start-up
    results: dict[str, float] = {}
    packed: list = []
    results["gateway: encode entries (event loop)"] = _cpu_us(
        n, lambda: packed.extend(pack_entry(entry) for entry in entries))
    frames = [_frame(packed[i:i + 1000]) for i in range(0, n, 1000)]
    results["collector: decode frames"] = _cpu_us(n, lambda: [_decode(frame) for frame in frames])

    keep = _Keep()
    provider, processors = build_tracer_provider(
        service_name="sluice", sample_ratio=1.0, exporters={"spans": keep}, max_queue_size=4 * n,
        max_export_batch_size=512, schedule_delay_s=0.5, inline=frozenset({"spans"}))
    recorder = SpanRecorder(provider.resource, processors)
    results["collector: SDK spans + inline processor"] = _cpu_us(
        n, lambda: [recorder.record(trace, row) for row, trace in entries])
    for processor in processors:
        processor.force_flush()
    spans = keep.spans
    # In the collector spans live for a moment; here all of them stay alive, so keep them
    # out of the collector's generations or every collection would walk them.
    gc.collect()
    gc.freeze()
    memo = _ResourceMemo()
    batches = []
    results["collector: spans -> Arrow"] = _cpu_us(
        n, lambda: batches.extend(spans_to_arrow(spans[i:i + 512], memo) for i in range(0, len(spans), 512)))
    codec = RequestArrowCodec()
    tables = []
    results["collector: rows -> Arrow"] = _cpu_us(
        n, lambda: tables.extend(codec.encode(rows[i:i + 20_000]) for i in range(0, n, 20_000)))

    with tempfile.TemporaryDirectory() as directory:
        client = open_client(f"chdb://{directory}/clickhouse")
        migrate(client, "sluice", ttl_days=30)
        span_codec = SpanArrowCodec()
        span_tables = [span_codec.encode(batches[i:i + 40]) for i in range(0, len(batches), 40)]
        # The engine works in threads of its own: count the whole process.
        results["collector: chDB insert, rows"] = _cpu_us(
            n, lambda: [client.insert_arrow("llm_requests", t, database="sluice") for t in tables], time.process_time)
        results["collector: chDB insert, spans"] = _cpu_us(
            n, lambda: [span_codec.insert(client, "sluice", t) for t in span_tables],
            time.process_time)
        client.close()
    provider.shutdown()

    print(f"{n:,} requests, {len(spans):,} spans; CPU µs per request\n")
    for step, us in results.items():
        print(f"  {step:42s} {us:6.2f}")
    print(f"  {'collector total':42s} {sum(v for k, v in results.items() if k.startswith('collector')):6.2f}")


if __name__ == "__main__":
    main()
