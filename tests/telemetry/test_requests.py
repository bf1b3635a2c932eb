"""Request rows: cost, prompt logging policy, metrics, and rows landing in llm_requests."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest
from prometheus_client.parser import text_string_to_metric_families

from telemetry import RequestRecord


def _samples(tel) -> dict[tuple[str, tuple], float]:
    body, _ = tel.metrics.render()
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _rec(**kw) -> RequestRecord:
    base = dict(request_id="r1", trace_id="a" * 32, span_id="b" * 16, tenant="acme",
                key_id="kid_3f2a9c", public_model="chat-default", provider="openai-main",
                provider_type="openai", deployment="openai-main/gpt-4o-mini",
                upstream_model="gpt-4o-mini", response_model="gpt-4o-mini-2024-07-18",
                status_code=200, attempts=1, latency_ms=120.0, gateway_overhead_ms=1.5,
                input_tokens=1000, output_tokens=500, cached_tokens=0, cache_status="miss",
                prompt_text="hello", completion_text="world", finish_reason="stop")
    base.update(kw)
    return RequestRecord(**base)


def test_rows_land_with_cost_and_all_fields(make_telemetry, ch, database):
    tel = make_telemetry()
    tel.record(_rec(request_id="r1", stream=True, ttft_ms=80.0, temperature=0.5, max_tokens=64,
                    guardrail_actions=["pii:mask", "toxicity:flag"], guardrail_latency_ms=3.0,
                    prompt_embedding=[0.5, -0.25, 1.0], cache_similarity=0.93, user="u-1",
                    client_ip="10.0.0.1", user_agent="OpenAI/Python 1.50"))
    tel.record(_rec(request_id="r2", status_code=502, error_type="upstream_error", attempts=3,
                    fallback=True, input_tokens=None, output_tokens=None))
    tel.record(_rec(request_id="r3", public_model="embed", operation="embeddings",
                    upstream_model="text-embedding-3-small", response_model="",
                    input_tokens=2_000_000, output_tokens=0, cost_usd=None))
    assert tel.flush(timeout_s=5)

    rows = {r["request_id"]: r for r in ch.query(
        f"SELECT * FROM `{database}`.llm_requests").named_results()}
    assert set(rows) == {"r1", "r2", "r3"}
    r1 = rows["r1"]
    # gpt-4o-mini via its dated response model: 1000 * 0.15 + 500 * 0.60 per 1M.
    assert r1["cost_usd"] == pytest.approx((1000 * 0.15 + 500 * 0.60) / 1e6)
    assert r1["guardrail_actions"] == ["pii:mask", "toxicity:flag"]
    assert r1["prompt_embedding"] == [0.5, -0.25, 1.0]
    assert r1["ttft_ms"] == 80.0 and r1["stream"] is True and r1["max_tokens"] == 64
    assert (r1["tenant"], r1["key_id"], r1["deployment"]) == ("acme", "kid_3f2a9c",
                                                              "openai-main/gpt-4o-mini")
    r2 = rows["r2"]
    assert r2["cost_usd"] is None and r2["input_tokens"] is None
    assert (r2["status_code"], r2["error_type"], r2["attempts"], r2["fallback"]) == \
        (502, "upstream_error", 3, True)
    # Falls back to the upstream model's price when the response names none.
    assert rows["r3"]["cost_usd"] == pytest.approx(0.04)


def test_prompt_logging_policy_per_tenant(make_telemetry, ch, database):
    tel = make_telemetry(max_text_chars=10,
                         tenants={"bank": {"log_prompts": False}, "wide": {"max_text_chars": 100}})
    long = "x" * 50
    tel.record(_rec(request_id="default", prompt_text=long, completion_text=long,
                    prompt_embedding=[0.1]))
    tel.record(_rec(request_id="bank", tenant="bank", prompt_text=long, completion_text=long,
                    prompt_embedding=[0.1]))
    tel.record(_rec(request_id="wide", tenant="wide", prompt_text=long, completion_text=long))
    assert tel.flush(timeout_s=5)
    got = {r[0]: r[1:] for r in ch.query(
        f"SELECT request_id, length(prompt_text), length(completion_text), "
        f"length(prompt_embedding) FROM `{database}`.llm_requests").result_rows}
    assert got == {"default": (10, 10, 1), "bank": (0, 0, 0), "wide": (50, 50, 0)}


def test_metrics_follow_records_without_high_cardinality_labels(make_telemetry):
    tel = make_telemetry()
    tel.record(_rec(request_id="req-123", user="alice@example.com", stream=True, ttft_ms=50.0,
                    guardrail_actions=["pii:mask"]))
    tel.record(_rec(status_code=429, error_type="rate_limited", cache_status="hit",
                    attempts=2, fallback=True))
    s = _samples(tel)
    labels = (("operation", "chat"), ("provider", "openai-main"),
              ("public_model", "chat-default"), ("status_class", "2xx"), ("tenant", "acme"))
    assert s[("sluice_requests_total", labels)] == 1
    assert s[("sluice_request_errors_total", (("error_type", "rate_limited"),
              ("provider", "openai-main"), ("public_model", "chat-default")))] == 1
    assert s[("sluice_tokens_total", (("kind", "input"), ("provider", "openai-main"),
              ("public_model", "chat-default"), ("tenant", "acme")))] == 2000
    assert s[("sluice_fallbacks_total", (("public_model", "chat-default"),))] == 1
    assert s[("sluice_upstream_attempts_total", (("public_model", "chat-default"),))] == 3
    assert s[("sluice_cache_requests_total", (("operation", "chat"), ("status", "hit")))] == 1
    assert s[("sluice_guardrail_actions_total", (("action", "mask"), ("guardrail", "pii")))] == 1
    assert s[("sluice_time_to_first_token_seconds_count", (("public_model", "chat-default"),))] == 1
    assert s[("sluice_gateway_overhead_seconds_count", (("operation", "chat"),))] == 2
    assert s[("sluice_cost_usd_total", (("provider", "openai-main"),
              ("public_model", "chat-default"), ("tenant", "acme")))] == pytest.approx(
        2 * (1000 * 0.15 + 500 * 0.60) / 1e6)
    body = tel.metrics.render()[0].decode()
    for forbidden in ("req-123", "alice", "kid_3f2a9c", "a" * 32):
        assert forbidden not in body
    tel.metrics.set_breaker_state("openai-main/gpt-4o-mini", "open")
    assert _samples(tel)[("sluice_breaker_state",
                          (("deployment", "openai-main/gpt-4o-mini"),))] == 2


def test_request_supplied_label_values_are_capped():
    from telemetry import GatewayMetrics
    metrics = GatewayMetrics(label_limit=5)
    for i in range(20):
        metrics.observe_request(_rec(public_model=f"junk-{i}"))
    body = metrics.render()[0].decode()
    assert body.count('public_model="other"') > 0
    assert "junk-19" not in body and "junk-4" in body


def test_record_never_raises_and_is_cheap(make_telemetry, ch, database):
    tel = make_telemetry()
    bad = _rec(request_id="bad")
    bad.input_tokens = "many"          # type: ignore[assignment]  # a pipeline bug
    tel.record(bad)                    # logged, not raised, and the row kept
    n = 5000
    recs = [_rec(request_id=f"r{i}") for i in range(n)]
    start = time.perf_counter()
    for rec in recs:
        tel.record(rec)
    per_call_us = (time.perf_counter() - start) / n * 1e6
    assert per_call_us < 500, per_call_us     # generous: shared 2-core CI machine
    assert tel.flush(timeout_s=10)
    assert ch.query(f"SELECT count() FROM `{database}`.llm_requests").result_rows[0][0] == n + 1
    assert ch.query(f"SELECT input_tokens, anomalies FROM `{database}`.llm_requests WHERE request_id = 'bad'"
                    ).result_rows == [(None, {"input_tokens": "<str of 4 chars>"})]
    print(f"record(): {per_call_us:.1f} us per call")


def test_disabled_telemetry_keeps_metrics_and_writes_nothing(tmp_path):
    from telemetry import Telemetry, TelemetryConfig
    tel = Telemetry.from_config(TelemetryConfig(enabled=False), tmp_path)
    tel.start()
    with tel.tracer.start_as_current_span("noop") as span:
        assert not span.get_span_context().is_valid
    tel.record(_rec())
    assert b"sluice_requests_total" in tel.metrics.render()[0]
    tel.shutdown()
    assert not (tmp_path / "clickhouse").exists()


def test_timestamp_defaults_to_now_utc():
    rec = RequestRecord()
    assert rec.timestamp.tzinfo == timezone.utc
    assert len(rec.as_row()) == len(RequestRecord.__slots__)


def test_a_malformed_row_is_kept_and_flagged(make_telemetry, ch, database):
    """A value that does not fit its column (a pipeline bug, an odd request) costs nothing
    but that value: the row is written with NULL there and the value noted in `anomalies`
    (it used to be dropped as "invalid": the request vanished from the ledger)."""
    tel = make_telemetry()
    for i in range(3):
        tel.record(_rec(request_id=f"good{i}"))
    broken = _rec(request_id="broken")
    broken.max_tokens = "lots"         # type: ignore[assignment]  # a pipeline bug
    tel.record(broken)
    assert tel.flush(timeout_s=5)
    rows = dict(ch.query(f"SELECT request_id, (max_tokens, anomalies) FROM `{database}`.llm_requests").result_rows)
    assert rows == {"good0": (None, {}), "good1": (None, {}), "good2": (None, {}),
                    "broken": (None, {"max_tokens": "<str of 4 chars>"})}
    assert tel.request_writer.dropped == 0
    assert not any(name == "sluice_telemetry_rows_dropped_total" for name, _ in _samples(tel))


def test_numpy_embeddings_are_stored(make_telemetry, ch, database):
    np = pytest.importorskip("numpy")
    tel = make_telemetry()
    tel.record(_rec(request_id="np", prompt_embedding=np.array([0.5, 0.25], dtype=np.float64)))
    tel.record(_rec(request_id="empty", prompt_embedding=np.zeros(0)))
    assert tel.flush(timeout_s=5)
    got = dict(ch.query(f"SELECT request_id, prompt_embedding FROM `{database}`.llm_requests"
                        ).result_rows)
    assert got == {"np": [0.5, 0.25], "empty": []}


def test_queued_rows_are_plain_values():
    from array import array

    from telemetry.records import REQUEST_COLUMNS
    from telemetry.request_codec import queued_row

    when = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)
    row = queued_row(RequestRecord(timestamp=when, guardrail_actions=["pii:mask"], prompt_embedding=[0.5, 2.0]))
    at = REQUEST_COLUMNS.index
    assert row[at("timestamp")] == int(when.timestamp()) * 1_000_000
    assert row[at("guardrail_actions")] == ("pii:mask",)
    assert row[at("prompt_embedding")] == array("f", [0.5, 2.0]).tobytes()
    # What the gateway passes (epoch microseconds) goes through untouched.
    assert queued_row(RequestRecord(timestamp=123))[at("timestamp")] == 123


def test_put_many_takes_what_fits_and_counts_the_rest():
    from telemetry.batch_writer import BatchWriter
    from telemetry.clickhouse import ClickHouseConnection
    from telemetry.request_codec import RequestArrowCodec

    dropped = []

    class Listener:
        def rows_written(self, queue, n): pass
        def rows_dropped(self, queue, n, reason): dropped.append((n, reason))
        def write_failed(self, queue): pass

    writer = BatchWriter(name="requests", codec=RequestArrowCodec(), queue_max=5, batch_size=100,
                         connection=ClickHouseConnection(lambda: None, "db"), listener=Listener())
    assert writer.put_many([(i,) for i in range(3)]) == 3
    assert writer.put_many([(i,) for i in range(4)]) == 2
    assert writer.depth == 5 and dropped == [(2, "queue_full")]
