"""`sluice report` numbers from known rows, on the real engine."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from telemetry.records import REQUEST_COLUMNS, RequestRecord
from telemetry.report import parse_since, report, report_rows
from telemetry.schema import migrate


@pytest.fixture
def traffic(ch, database):
    migrate(ch, database)
    now = datetime.now(timezone.utc)
    recs = [
        # chat-default: 4 requests in the last hour.
        RequestRecord(timestamp=now - timedelta(minutes=1), public_model="chat-default",
                      deployment="a", tenant="acme", status_code=200, latency_ms=100,
                      stream=True, ttft_ms=50, input_tokens=10, output_tokens=5,
                      cost_usd=0.001, cache_status="hit"),
        RequestRecord(timestamp=now - timedelta(minutes=2), public_model="chat-default",
                      deployment="a", tenant="acme", status_code=200, latency_ms=200,
                      stream=True, ttft_ms=150, input_tokens=20, output_tokens=10,
                      cost_usd=0.002, cache_status="miss"),
        RequestRecord(timestamp=now - timedelta(minutes=3), public_model="chat-default",
                      deployment="b", tenant="beta", status_code=200, latency_ms=300,
                      input_tokens=30, output_tokens=15, cost_usd=0.003, cache_status="miss",
                      fallback=True),
        RequestRecord(timestamp=now - timedelta(minutes=4), public_model="chat-default",
                      deployment="a", tenant="beta", status_code=502, error_type="upstream",
                      latency_ms=400, cache_status="off"),
        # embed: 1 request, no cache lookups, no price.
        RequestRecord(timestamp=now - timedelta(minutes=5), public_model="embed",
                      deployment="e", tenant="acme", status_code=200, latency_ms=20,
                      input_tokens=100, cache_status="bypass"),
        # Two hours ago: outside --since 1h, inside 7d.
        RequestRecord(timestamp=now - timedelta(hours=2), public_model="embed",
                      deployment="e", tenant="acme", status_code=200, latency_ms=40,
                      input_tokens=100),
    ]
    ch.insert("llm_requests", [r.as_row() for r in recs], column_names=list(REQUEST_COLUMNS),
              database=database)
    return database


def test_report_numbers_by_model(ch, traffic):
    rows, total = report_rows(ch, traffic, since="1h", by="model")
    assert [r.key for r in rows] == ["chat-default", "embed"]
    chat, embed = rows
    assert chat.requests == 4
    assert chat.error_rate == pytest.approx(0.25)
    # Linear interpolation over 100, 200, 300, 400.
    assert chat.latency_ms == pytest.approx((250.0, 385.0, 397.0))
    assert chat.ttft_ms == pytest.approx((100.0, 145.0, 149.0))    # streamed only: 50, 150
    assert (chat.input_tokens, chat.output_tokens) == (60, 30)
    assert chat.cost_usd == pytest.approx(0.006)
    assert chat.cache_hit_rate == pytest.approx(1 / 3)              # hit / (hit + 2 miss)
    assert chat.fallback_rate == pytest.approx(0.25)
    assert embed.requests == 1 and embed.cache_hit_rate is None and embed.cost_usd is None
    assert embed.ttft_ms == (None, None, None)
    assert total.requests == 5 and total.error_rate == pytest.approx(0.2)
    assert total.cost_usd == pytest.approx(0.006)


def test_report_windows_and_groupings(ch, traffic):
    rows, total = report_rows(ch, traffic, since="7d", by="model")
    assert total.requests == 6
    assert {r.key: r.requests for r in rows} == {"chat-default": 4, "embed": 2}
    rows, _ = report_rows(ch, traffic, since="1h", by="deployment")
    assert {r.key: r.requests for r in rows} == {"a": 3, "b": 1, "e": 1}
    rows, _ = report_rows(ch, traffic, since="1h", by="tenant")
    assert {r.key: r.error_rate for r in rows} == {"acme": 0.0, "beta": 0.5}
    assert report_rows(ch, traffic, since="30s", by="model") == ([], None)


def test_rendered_table(ch, traffic):
    text = report(ch, traffic, since="1h", by="model")
    lines = text.splitlines()
    assert lines[0] == "Sluice report: last 1h, by model"
    chat = next(line for line in lines if line.startswith("chat-default"))
    for cell in ("4", "25.0%", "250", "385", "397", "100", "145", "60", "30", "0.0060",
                 "33.3%"):
        assert f" {cell} " in f" {chat} ", (cell, chat)
    assert lines[-1].split()[:2] == ["TOTAL", "5"]
    assert "(no requests)" in report(ch, traffic, since="1s")


@pytest.mark.parametrize(("text", "seconds"), [("30m", 1800), ("1h", 3600), ("7d", 604800),
                                                ("45s", 45), (" 2w ", 1209600)])
def test_parse_since(text, seconds):
    assert parse_since(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "1", "h", "1y", "-1h", "0m", "1.5h"])
def test_parse_since_rejects(text):
    with pytest.raises(ValueError, match="--since"):
        parse_since(text)


def test_bad_group_is_rejected(ch, traffic):
    with pytest.raises(ValueError, match="--by"):
        report_rows(ch, traffic, by="user")
