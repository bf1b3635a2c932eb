"""Real traffic through a running gateway (official SDKs -> Sluice -> mock providers)
lands in ClickHouse as spans and request rows, with costs, streamed usage, fallbacks,
and no provider or gateway key in any stored byte."""

from __future__ import annotations

import itertools

import anthropic
import openai
import pytest

from tests.conftest import BACKUP_KEY, PRIMARY_KEY
from tests.gateway_server import start_gateway

GATEWAY_KEY = "sluice-telemetry-test-secret"
_db = itertools.count()


@pytest.fixture(scope="module")
def traced(primary, backup, chdb_url, ch):
    """A gateway with telemetry on, writing to its own database on the session's chDB."""
    database = f"gw_traffic_{next(_db)}"
    fast = {"connect_s": 1, "read_s": 2, "total_s": 5}
    gw = start_gateway({
        "telemetry": {"clickhouse_url": chdb_url, "database": database, "flush_interval_s": 0.05,
                      "writer": "thread",
                      "prices": {"m1": {"input": 1.0, "output": 2.0}}},
        "cache": {"enabled": False},
        "keys": [{"key": GATEWAY_KEY, "tenant": "team-t", "name": "ci-key"}],
        "providers": {
            "primary": {"type": "openai", "base_url": f"{primary.url}/v1", "api_key": PRIMARY_KEY,
                        "timeouts": fast},
            "backup": {"type": "anthropic", "base_url": backup.url, "api_key": BACKUP_KEY,
                       "timeouts": fast},
        },
        "models": {
            "gpt": {"deployments": [{"provider": "primary", "model": "m1"}]},
            "claude": {"deployments": [{"provider": "backup", "model": "claude-x"}]},
            "after-500": {"deployments": [{"provider": "primary", "model": "fail-500"},
                                          {"provider": "backup", "model": "claude-x"}]},
        },
        "router": {"retries": 0, "backoff_base_s": 0.01},
    })
    yield gw, database
    gw.stop()
    ch.command(f"DROP DATABASE IF EXISTS `{database}`")


@pytest.fixture(scope="module")
def traffic(traced, ch):
    gw, database = traced
    oai = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=GATEWAY_KEY, max_retries=0)
    claude = anthropic.Anthropic(base_url=gw.url, api_key=GATEWAY_KEY, max_retries=0)
    ids = {}
    resp = oai.chat.completions.with_raw_response.create(
        model="gpt", messages=[{"role": "user", "content": "plain hello"}], temperature=0.3)
    ids["plain"] = resp.headers["x-sluice-request-id"]
    list(oai.chat.completions.create(                      # no include_usage from the caller
        model="gpt", stream=True, messages=[{"role": "user", "content": "stream hello"}]))
    claude.messages.create(model="claude", max_tokens=50,
                           messages=[{"role": "user", "content": "anthropic hello"}])
    oai.chat.completions.create(model="after-500",
                                messages=[{"role": "user", "content": "fallback hello"}])
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="no-such-model",
                                    messages=[{"role": "user", "content": "x"}])
    assert gw.gateway.telemetry.flush(timeout_s=10)
    return gw, database, ids


def _rows(ch, database):
    return {r["prompt_text"]: r for r in ch.query(
        f"SELECT * FROM `{database}`.llm_requests").named_results()}


def test_each_request_is_a_row(traffic, ch):
    _, database, ids = traffic
    rows = _rows(ch, database)
    plain = next(r for r in rows.values() if r["request_id"] == ids["plain"])
    assert (plain["tenant"], plain["public_model"], plain["deployment"]) == \
        ("team-t", "gpt", "primary/m1")
    assert plain["status_code"] == 200 and plain["attempts"] == 1 and not plain["fallback"]
    assert plain["input_tokens"] > 0 and plain["output_tokens"] > 0
    assert plain["cost_usd"] == pytest.approx(
        (plain["input_tokens"] * 1.0 + plain["output_tokens"] * 2.0) / 1e6)
    assert plain["temperature"] == pytest.approx(0.3)
    assert plain["key_id"] and plain["gateway_overhead_ms"] is not None
    assert len(plain["trace_id"]) == 32
    statuses = sorted(r["status_code"] for r in ch.query(
        f"SELECT status_code FROM `{database}`.llm_requests").named_results())
    assert statuses == [200, 200, 200, 200, 404]


def test_streamed_usage_is_captured_and_costed(traffic, ch):
    _, database, _ = traffic
    stream = next(r for r in _rows(ch, database).values() if r["stream"])
    assert stream["output_tokens"] and stream["output_tokens"] > 0   # gateway asked upstream
    assert stream["cost_usd"] is not None and stream["cost_usd"] > 0
    assert stream["ttft_ms"] is not None and stream["ttft_ms"] <= stream["latency_ms"]


def test_fallback_row_and_attempt_spans(traffic, ch):
    _, database, _ = traffic
    row = next(r for r in _rows(ch, database).values() if r["public_model"] == "after-500")
    assert row["fallback"] and row["attempts"] == 2 and row["deployment"] == "backup/claude-x"
    spans = ch.query(
        f"SELECT SpanName, SpanKind, StatusCode, SpanAttributes, ParentSpanId, SpanId "
        f"FROM `{database}`.otel_traces WHERE TraceId = %(t)s", parameters={"t": row["trace_id"]}
    ).named_results()
    spans = list(spans)
    server = [s for s in spans if s["SpanKind"] == "Server"]
    attempts = [s for s in spans if s["SpanKind"] == "Client"]
    assert len(server) == 1
    assert sorted(a["SpanAttributes"]["sluice.attempt"] for a in attempts) == ["1", "2"]
    assert {a["StatusCode"] for a in attempts} == {"Error", "Unset"}
    assert all(a["ParentSpanId"] == server[0]["SpanId"] for a in attempts)
    assert server[0]["SpanAttributes"]["sluice.fallback"] == "true"


def test_no_key_is_stored_anywhere(traffic, ch):
    _, database, _ = traffic

    def rows_containing(table: str, text: str) -> int:
        return ch.query(f"SELECT count() FROM `{database}`.{table} "
                        f"WHERE position(formatRowNoNewline('JSONEachRow', *), %(s)s) > 0",
                        parameters={"s": text}).result_rows[0][0]

    for table in ("llm_requests", "otel_traces"):
        assert rows_containing(table, "team-t") > 0          # the probe sees stored values
        for secret in (PRIMARY_KEY, BACKUP_KEY, GATEWAY_KEY):
            assert rows_containing(table, secret) == 0, (table, secret)


def test_report_through_the_running_gateway(traffic):
    gw, _, _ = traffic
    text = gw.gateway.report(since="1h", by="model")
    assert "gpt" in text and "after-500" in text and "TOTAL" in text


def test_incoming_traceparent_is_honoured(traced, ch, wait_for):
    gw, database = traced
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    oai = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=GATEWAY_KEY, max_retries=0)
    sampled = oai.chat.completions.with_raw_response.create(
        model="gpt", messages=[{"role": "user", "content": "traced"}],
        extra_headers={"traceparent": f"00-{trace_id}-{parent_id}-01"})
    assert sampled.headers["x-sluice-trace-id"] == trace_id
    unsampled_id = "5bf92f3577b34da6a3ce929d0e0e4737"
    oai.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "not sampled"}],
                                extra_headers={"traceparent": f"00-{unsampled_id}-{parent_id}-00"})
    def both_rows_written():                  # spans end after the caller has its answer
        gw.gateway.telemetry.flush(5)
        return ch.query(f"SELECT count() FROM `{database}`.llm_requests WHERE trace_id IN (%(a)s, %(b)s)",
                        parameters={"a": trace_id, "b": unsampled_id}).result_rows[0][0] == 2
    assert wait_for(both_rows_written, timeout_s=20)
    spans = list(ch.query(f"SELECT SpanKind, ParentSpanId, TraceId FROM `{database}`.otel_traces "
                          f"WHERE TraceId IN (%(a)s, %(b)s)", parameters={"a": trace_id, "b": unsampled_id}
                          ).named_results())
    server = [s for s in spans if s["SpanKind"] == "Server"]
    assert [s["ParentSpanId"] for s in server] == [parent_id]            # joined the caller's trace
    assert all(s["TraceId"] == trace_id for s in spans)                  # the unsampled one kept no spans
    rows = ch.query(f"SELECT count() FROM `{database}`.llm_requests WHERE trace_id IN (%(a)s, %(b)s)",
                    parameters={"a": trace_id, "b": unsampled_id}).result_rows
    assert rows[0][0] == 2                                               # rows are never sampled


@pytest.mark.parametrize("keep_failed", [True, False])
def test_sampling_keeps_failed_requests_spans(primary, backup, chdb_url, ch, keep_failed):
    """sample_ratio 0 drops the spans of a plain request; with keep_failed_traces (the
    default) a fallback's spans are kept all the same, unless the caller's traceparent
    said not to sample. Rows are never sampled."""
    database = f"gw_sampling_{next(_db)}"
    gw = start_gateway({
        "telemetry": {"clickhouse_url": chdb_url, "database": database, "flush_interval_s": 0.05,
                      "writer": "thread", "sample_ratio": 0.0, "keep_failed_traces": keep_failed},
        "cache": {"enabled": False},
        "providers": {
            "primary": {"type": "openai", "base_url": f"{primary.url}/v1", "api_key": PRIMARY_KEY},
            "backup": {"type": "anthropic", "base_url": backup.url, "api_key": BACKUP_KEY},
        },
        "models": {
            "gpt": {"deployments": [{"provider": "primary", "model": "m1"}]},
            "after-500": {"deployments": [{"provider": "primary", "model": "fail-500"},
                                          {"provider": "backup", "model": "claude-x"}]},
        },
        "router": {"retries": 0, "backoff_base_s": 0.01},
    })
    try:
        oai = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0)
        ask = oai.chat.completions.with_raw_response.create
        plain = ask(model="gpt", messages=[{"role": "user", "content": "plain"}])
        failed = ask(model="after-500", messages=[{"role": "user", "content": "fallback"}])
        declined_id = "6bf92f3577b34da6a3ce929d0e0e4738"
        ask(model="after-500", messages=[{"role": "user", "content": "caller declined"}],
            extra_headers={"traceparent": f"00-{declined_id}-00f067aa0ba902b7-00"})
        assert gw.gateway.telemetry.flush(timeout_s=10)
        traces = {t: n for t, n in ch.query(
            f"SELECT TraceId, count() FROM `{database}`.otel_traces GROUP BY TraceId").result_rows}
        assert plain.headers["x-sluice-trace-id"] not in traces
        if keep_failed:                      # the server span and both attempts
            assert traces == {failed.headers["x-sluice-trace-id"]: 3}
        else:
            assert traces == {}
        rows = ch.query(f"SELECT count() FROM `{database}`.llm_requests").result_rows
        assert rows[0][0] == 3
    finally:
        gw.stop()
        ch.command(f"DROP DATABASE IF EXISTS `{database}`")


def test_untrusted_traceparent_is_a_link_not_a_parent(primary, chdb_url, ch, wait_for):
    """Only callers in `trusted_trace_sources` may set the trace id or the sampling: from
    anyone else (here loopback, not in the list) the caller's span becomes a link."""
    database = f"gw_traffic_{next(_db)}"
    gw = start_gateway({
        "telemetry": {"clickhouse_url": chdb_url, "database": database, "flush_interval_s": 0.05,
                      "writer": "thread", "trusted_trace_sources": ["10.0.0.0/8"]},
        "cache": {"enabled": False},
        "providers": {"primary": {"type": "openai", "base_url": f"{primary.url}/v1", "api_key": PRIMARY_KEY}},
        "models": {"gpt": {"deployments": [{"provider": "primary", "model": "m1"}]}},
    })
    try:
        oai = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="x", max_retries=0)
        caller_trace, caller_span = "6bf92f3577b34da6a3ce929d0e0e4738", "00f067aa0ba902b7"
        resp = oai.chat.completions.with_raw_response.create(
            model="gpt", messages=[{"role": "user", "content": "from outside"}],
            extra_headers={"traceparent": f"00-{caller_trace}-{caller_span}-00"})     # "do not sample"
        ours = resp.headers["x-sluice-trace-id"]
        assert ours != caller_trace
        # The server span ends after the caller has its answer: poll, do not race one flush.
        def server_spans():
            gw.gateway.telemetry.flush(5)
            return list(ch.query(
                f"SELECT TraceId, ParentSpanId, Links.TraceId AS lt, Links.SpanId AS ls "
                f"FROM `{database}`.otel_traces WHERE SpanKind = 'Server'").named_results())
        [server] = wait_for(server_spans, timeout_s=20)
        assert server["TraceId"] == ours and server["ParentSpanId"] == ""        # sampled by our ratio
        assert (server["lt"], server["ls"]) == ([caller_trace], [caller_span])
    finally:
        gw.stop()
        ch.command(f"DROP DATABASE IF EXISTS `{database}`")
