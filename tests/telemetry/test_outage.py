"""ClickHouse unreachable while traffic flows: record() stays instant, the queue is
bounded, drops are counted, and after recovery the queued rows arrive."""

from __future__ import annotations

import socket
import threading
import time

from prometheus_client.parser import text_string_to_metric_families

from telemetry import RequestRecord
from telemetry.clickhouse import open_client


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]       # closed again when the socket is: nothing listens


class Outage:
    """A client factory: a real server URL nobody listens on, until `recover()`."""

    def __init__(self, down_url: str, up_url: str) -> None:
        self.down_url, self.up_url = down_url, up_url
        self.up = threading.Event()
        self.attempts = 0

    def __call__(self):
        self.attempts += 1
        return open_client(self.up_url if self.up.is_set() else self.down_url,
                           connect_timeout_s=0.5)

    def recover(self) -> None:
        self.up.set()


def _metric(tel, name: str, **labels) -> float:
    for family in text_string_to_metric_families(tel.metrics.render()[0].decode()):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def test_outage_bounds_memory_counts_drops_and_recovers(make_telemetry, ch, database, chdb_url,
                                                        wait_for):
    outage = Outage(f"http://127.0.0.1:{_closed_port()}/sluice", chdb_url)
    tel = make_telemetry(client_factory=outage, queue_max=50, batch_size=10,
                         retry_backoff_s=0.2)

    slowest = 0.0
    for i in range(80):
        t0 = time.perf_counter()
        tel.record(RequestRecord(request_id=f"r{i}", public_model="m1", status_code=200))
        slowest = max(slowest, time.perf_counter() - t0)
        with tel.tracer.start_as_current_span(f"span-{i}"):
            pass
    assert slowest < 0.05, f"record() blocked for {slowest * 1000:.1f} ms"
    assert tel.request_writer.depth == 50                       # bounded
    assert _metric(tel, "sluice_telemetry_rows_dropped_total",
                   queue="requests", reason="queue_full") == 30
    assert _metric(tel, "sluice_telemetry_queue_depth", queue="requests") == 50
    assert wait_for(lambda: _metric(tel, "sluice_telemetry_write_errors_total",
                                    queue="requests") >= 2, timeout_s=5)
    attempts_while_down = outage.attempts

    outage.recover()
    assert tel.flush(timeout_s=10)
    assert outage.attempts > attempts_while_down
    got = ch.query(f"SELECT count(), uniqExact(request_id) FROM `{database}`.llm_requests"
                   ).result_rows[0]
    assert got == (50, 50)                                      # every queued row arrived
    spans = ch.query(f"SELECT count() FROM `{database}`.otel_traces").result_rows[0][0]
    span_drops = _metric(tel, "sluice_telemetry_rows_dropped_total", queue="spans",
                         reason="queue_full")
    assert spans == 50 and span_drops == 30                     # same bound for spans
    assert tel.request_writer.depth == 0
    assert _metric(tel, "sluice_telemetry_rows_written_total", queue="requests") == 50


def test_start_and_shutdown_with_clickhouse_down_are_bounded(tmp_path):
    from telemetry import Telemetry, TelemetryConfig
    cfg = TelemetryConfig(clickhouse_url=f"http://default:pw@127.0.0.1:{_closed_port()}",
                          connect_timeout_s=0.5, retry_backoff_s=0.1, flush_interval_s=0.05,
                          writer="thread")
    tel = Telemetry.from_config(cfg, tmp_path)
    t0 = time.monotonic()
    tel.start()                                                 # logs, does not raise
    for i in range(5):
        tel.record(RequestRecord(request_id=f"r{i}"))
    tel.shutdown(timeout_s=0.5)
    assert time.monotonic() - t0 < 5
    assert tel.request_writer.dropped == 5                      # counted as lost at shutdown
    assert _metric(tel, "sluice_telemetry_rows_dropped_total", queue="requests",
                   reason="shutdown") == 5
    assert "pw" not in tel.connection.description


def test_rejected_batches_are_dropped_not_retried_forever(make_telemetry, ch, database, wait_for):
    tel = make_telemetry(retry_backoff_s=0.05)
    tel.record(RequestRecord(request_id="ok"))
    assert tel.flush(timeout_s=5)
    # An operator breaks the table (schema drift): inserts are now rejected by the server.
    ch.command(f"ALTER TABLE `{database}`.llm_requests DROP COLUMN user_agent")
    tel.record(RequestRecord(request_id="doomed"))
    assert wait_for(lambda: _metric(tel, "sluice_telemetry_rows_dropped_total",
                                    queue="requests", reason="rejected") == 1, timeout_s=5)
    assert tel.request_writer.depth == 0
