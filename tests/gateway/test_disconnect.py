"""A client that goes away mid-stream cancels the upstream read: nothing outlives the request."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.gateway_server import start_gateway
from tests.mock_server import start_mock


@pytest.fixture(scope="module")
def slow_stream_gateway():
    url, stop_mock = start_mock(tokens_per_second=20, output_tokens=200)     # a 10 s stream
    gw = start_gateway({
        "providers": {"slow": {"type": "openai", "base_url": f"{url}/v1"}},
        "models": {"slow": {"deployments": [{"provider": "slow", "model": "m1"}]}},
        "telemetry": {"enabled": False}, "cache": {"enabled": False},
    })
    yield gw
    gw.stop()
    stop_mock()


def test_client_disconnect_releases_the_upstream(slow_stream_gateway):
    gw = slow_stream_gateway
    dep = gw.gateway.router.routes["slow"].deployments[0]
    body = {"model": "slow", "stream": True, "messages": [{"role": "user", "content": "long please"}]}
    started = time.monotonic()
    with httpx.Client(timeout=10) as client:
        with client.stream("POST", f"{gw.url}/v1/chat/completions", json=body) as resp:
            assert resp.status_code == 200
            lines = resp.iter_lines()
            assert next(lines).startswith("data: ")
            assert dep.in_flight == 1                 # the stream holds its deployment
    # The client closed after the first event; the gateway notices and lets go.
    deadline = time.monotonic() + 3
    while dep.in_flight and time.monotonic() < deadline:
        time.sleep(0.02)
    assert dep.in_flight == 0
    assert time.monotonic() - started < 5             # long before the 10 s stream would end
    # and it keeps serving
    ok = httpx.post(f"{gw.url}/v1/chat/completions", timeout=20,
                    json={"model": "slow", "messages": [{"role": "user", "content": "hi"}]})
    assert ok.status_code == 200


@pytest.fixture(scope="module")
def paced_gateway():
    url, stop_mock = start_mock(tokens_per_second=50, output_tokens=6)
    gw = start_gateway({
        "providers": {"paced": {"type": "openai", "base_url": f"{url}/v1"}},
        "models": {"paced": {"deployments": [{"provider": "paced", "model": "m1"}]}},
        "telemetry": {"enabled": False},
        "cache": {"enabled": True, "default": {"mode": "exact"}},
    })
    yield gw
    gw.stop()
    stop_mock()


def test_client_leaving_after_done_is_a_complete_request(paced_gateway, monkeypatch):
    """The OpenAI SDK closes right after `data: [DONE]` while a paced provider still sends its
    tail: the caller got everything, so the request is a 200 and its answer is cached."""
    import openai

    gw = paced_gateway
    seen = []
    record = gw.gateway.record
    monkeypatch.setattr(gw.gateway, "record", lambda ctx: (seen.append((ctx.status, ctx.error_type)), record(ctx)))
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="x", max_retries=0)
    messages = [{"role": "user", "content": "paced please"}]
    text = "".join(c.choices[0].delta.content or "" for c in
                   client.chat.completions.create(model="paced", stream=True, messages=messages) if c.choices)
    assert "paced please" in text
    deadline = time.monotonic() + 3
    while not seen and time.monotonic() < deadline:
        time.sleep(0.02)
    assert seen == [(200, None)]
    deadline = time.monotonic() + 5                     # the store runs in the background
    while True:
        again = client.chat.completions.with_raw_response.create(model="paced", stream=True, messages=messages)
        if again.headers["x-sluice-cache"] == "hit" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert again.headers["x-sluice-cache"] == "hit"
