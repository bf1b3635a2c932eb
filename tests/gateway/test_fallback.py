"""Retries, fallback, circuit breaking and honest stream failures, through the real stack."""

from __future__ import annotations

import time

import anthropic
import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

HELLO = [{"role": "user", "content": "hello"}]


def post(gateway, model, **extra):
    return httpx.post(f"{gateway.url}/v1/chat/completions", json={"model": model, "messages": HELLO, **extra},
                      timeout=20)


@pytest.mark.parametrize("model, first_outcome", [
    ("after-500", "http_500"),
    ("after-timeout", "timeout"),
    ("after-drop", "connection_dropped"),
])
def test_falls_back_to_secondary(gateway, model, first_outcome):
    resp = post(gateway, model)
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-sluice-deployment"] == "backup/claude-x"
    # router.retries = 1: two tries on the primary, then the backup answers.
    assert resp.headers["x-sluice-attempts"] == "3"
    assert "hello" in resp.json()["choices"][0]["message"]["content"]


def failed_attempts(gateway, outcome: str) -> dict[str, float]:
    """sluice_upstream_errors_total by deployment, for one outcome."""
    return {s.labels["deployment"]: s.value
            for family in text_string_to_metric_families(httpx.get(f"{gateway.url}/metrics").text)
            for s in family.samples
            if s.name == "sluice_upstream_errors_total" and s.labels.get("outcome") == outcome}


def test_429_retry_after_is_honoured_then_falls_back(gateway):
    before = failed_attempts(gateway, "http_429")
    started = time.monotonic()
    resp = post(gateway, "after-429")
    elapsed = time.monotonic() - started
    assert resp.status_code == 200 and resp.headers["x-sluice-deployment"] == "backup/claude-x"
    assert resp.headers["x-sluice-attempts"] == "3"
    assert elapsed >= 0.9        # the mock says Retry-After: 1; the retry waited for it
    # on-call sees which deployment said 429, and how often (both tries on the primary)
    after = failed_attempts(gateway, "http_429")
    grown = {d: n - before.get(d, 0.0) for d, n in after.items() if n != before.get(d, 0.0)}
    assert list(grown.values()) == [2.0] and "backup/claude-x" not in grown, grown


def test_provider_auth_failure_falls_over_without_retry(gateway):
    resp = post(gateway, "after-bad-key")
    assert resp.status_code == 200 and resp.headers["x-sluice-attempts"] == "2"


def test_request_error_is_not_fallen_back(gateway, backup):
    resp = post(gateway, "after-400")
    assert resp.status_code == 400
    assert resp.headers["x-sluice-attempts"] == "1"
    assert "error" in resp.json()
    assert backup.requests() == []


def test_all_deployments_failed_lists_attempts(gateway):
    resp = post(gateway, "all-down")
    assert resp.status_code == 502
    err = resp.json()["error"]
    assert err["code"] == "all_deployments_failed"
    assert "primary/fail-500: http_500" in err["message"] and "backup/fail-503: http_503" in err["message"]
    assert "Traceback" not in resp.text


def test_all_timeouts_is_504(gateway):
    resp = post(gateway, "all-timeout")
    assert resp.status_code == 504 and resp.json()["error"]["code"] == "upstream_timeout"


def test_anthropic_caller_gets_anthropic_error_shape(gateway):
    resp = httpx.post(f"{gateway.url}/v1/messages", timeout=20,
                      json={"model": "all-down", "max_tokens": 10, "messages": HELLO})
    assert resp.status_code == 502
    assert resp.json()["type"] == "error" and resp.json()["error"]["type"] == "api_error"


def test_stream_falls_back_before_first_byte(oai):
    chunks = list(oai.chat.completions.create(model="after-500", stream=True, messages=HELLO))
    assert "hello" in "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_midstream_failure_ends_openai_stream_with_error(oai):
    stream = oai.chat.completions.create(model="midstream", stream=True, messages=HELLO)
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            received.append(chunk)
    assert received, "some chunks arrived before the failure"
    assert "stream" in str(info.value).lower()


def test_midstream_failure_ends_anthropic_stream_with_error(claude):
    with pytest.raises(anthropic.APIStatusError):
        with claude.messages.stream(model="midstream-anthropic", max_tokens=32, messages=HELLO) as stream:
            for _ in stream.text_stream:
                pass


def test_circuit_breaker_opens_and_recovers(gateway, primary):
    primary.faults({"mode": "status", "status": 503, "model": "m-breaker"})
    for _ in range(3):                                   # threshold 3, retries 0
        assert post(gateway, "breaker").headers["x-sluice-deployment"] == "backup/claude-x"
    primary.clear()
    primary.faults({"mode": "status", "status": 503, "model": "m-breaker"})
    # Open: the primary is not even tried.
    resp = post(gateway, "breaker")
    assert resp.headers["x-sluice-deployment"] == "backup/claude-x" and resp.headers["x-sluice-attempts"] == "1"
    assert all(r["body"].get("model") != "m-breaker" for r in primary.requests())
    # After the cool-down one probe goes through; the primary is healthy again, so it closes.
    primary.clear()
    time.sleep(1.1)
    resp = post(gateway, "breaker")
    assert resp.headers["x-sluice-deployment"] == "primary/m-breaker"
    assert post(gateway, "breaker").headers["x-sluice-deployment"] == "primary/m-breaker"


def test_error_as_first_stream_event_falls_back(claude, oai):
    # Anthropic can answer 200 and then send `overloaded_error` as the first event:
    # nothing reached the caller yet, so the next deployment answers.
    with claude.messages.stream(model="overloaded-first", max_tokens=32, messages=HELLO) as stream:
        assert "hello" in "".join(stream.text_stream)
    resp = oai.chat.completions.with_raw_response.create(model="overloaded-first", stream=True, messages=HELLO)
    # (two tries per request on the failing deployment, until its breaker opens)
    assert resp.headers["x-sluice-deployment"] == "primary/m1" and int(resp.headers["x-sluice-attempts"]) >= 2
    assert "hello" in "".join(c.choices[0].delta.content or "" for c in resp.parse() if c.choices)
