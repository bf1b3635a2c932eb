"""Several workers' /metrics merged into one (telemetry/metrics_merge.py)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from telemetry import GatewayMetrics, RequestRecord
from telemetry.metrics_merge import merge_expositions, writer_exposition


def _value(text: bytes, name: str, **labels) -> float:
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    raise KeyError(name)


def test_counters_and_histograms_add_up_gauges_take_the_worst():
    workers = [GatewayMetrics(), GatewayMetrics()]
    for n, metrics in zip((3, 5), workers):
        for _ in range(n):
            metrics.observe_request(RequestRecord(public_model="gpt", provider="p", status_code=200,
                                                  latency_ms=12.0, input_tokens=10, output_tokens=2))
    workers[0].set_breaker_state("p/m1", "closed")
    workers[1].set_breaker_state("p/m1", "open")
    collector = writer_exposition({"written": {"requests": 8}, "dropped": {("spans", "queue_full"): 2},
                                   "failed": {}, "depth": {"requests": 4, "spans": 0}}, capacity=100)
    merged = merge_expositions([w.render()[0] for w in workers] + [collector])
    assert _value(merged, "sluice_requests_total", public_model="gpt", status_class="2xx") == 8
    assert _value(merged, "sluice_request_duration_seconds_count", public_model="gpt") == 8
    assert _value(merged, "sluice_request_duration_seconds_bucket", public_model="gpt", le="0.025") == 8
    assert _value(merged, "sluice_tokens_total", kind="input") == 80
    assert _value(merged, "sluice_breaker_state", deployment="p/m1") == 2          # open somewhere
    assert _value(merged, "sluice_telemetry_rows_written_total", queue="requests") == 8
    assert _value(merged, "sluice_telemetry_rows_dropped_total", queue="spans", reason="queue_full") == 2
    assert _value(merged, "sluice_telemetry_queue_depth", queue="requests") == 4
