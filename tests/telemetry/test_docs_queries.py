"""Every SQL query in docs/telemetry.md runs on the real schema (with a little traffic)."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

import pytest

from telemetry import RequestRecord

DOC = Path(__file__).resolve().parents[2] / "docs" / "telemetry.md"
QUERIES = re.findall(r"```sql\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_doc_has_queries():
    assert len(QUERIES) >= 5


@pytest.mark.parametrize("sql", QUERIES, ids=[f"q{i}" for i in range(len(QUERIES))])
def test_doc_query_runs(sql, make_telemetry, ch, database):
    tel = make_telemetry()
    with tel.tracer.start_as_current_span("POST /v1/chat/completions") as span:
        trace_id = format(span.get_span_context().trace_id, "032x")
    tel.record(RequestRecord(timestamp=datetime.now(timezone.utc), request_id="req-123",
                             trace_id=trace_id, tenant="acme", public_model="m1",
                             deployment="d1", status_code=200, latency_ms=10,
                             input_tokens=5, output_tokens=2, cache_status="semantic-hit",
                             cache_similarity=0.97, guardrail_actions=["pii:mask"],
                             prompt_embedding=[0.1, 0.2], prompt_text="hi",
                             max_tokens=-1))       # stored as 0, flagged in `anomalies`
    assert tel.flush(timeout_s=5)
    rows = ch.query(sql.replace("sluice.", f"`{database}`.")).result_rows
    assert rows, "each documented query returns the sample request"
