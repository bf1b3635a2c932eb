"""One tenant's guardrail load must not take another tenant's guardrail capacity.

Issue 21: two 100 KB PII-dense requests from one tenant kept both Presidio threads busy
for about a minute after their budget ran out, and every request of another tenant got
503 meanwhile. Here the same requests go through a real gateway (real Presidio, two
threads) while a second tenant keeps asking; the second tenant must be served.
"""

from __future__ import annotations

import threading
import time

import anthropic
import httpx
import openai
import pytest

from tests.gateway.conftest import gateway_config
from tests.gateway_server import start_gateway

# The prompt of the report: 5,000 e-mail addresses and 5,000 phone numbers, 100,000 chars.
DENSE_100K = "a@b.co 555-123-4567 " * 5000
EMAIL = "jane.doe@example.com"


@pytest.fixture(scope="module")
def two_tenants(primary, backup):
    cfg = gateway_config(primary, backup, keys=[
        {"key": "k-noisy", "tenant": "noisy"},
        {"key": "k-quiet", "tenant": "quiet"},
        {"key": "k-tiny", "tenant": "tiny-budget"},
    ])
    cfg["server"]["max_body_bytes"] = 1024 * 1024
    cfg["guardrails"] = {
        "threads": 2,
        # Both tenants get the same policy; two seconds of budget is plenty for a short
        # prompt even on a loaded machine, and too little for 10,000 PII values.
        "default": {"pii": {"input_action": "mask", "output_action": "off", "budget_ms": 2000}, "fail": "closed"},
        "tenants": {"tiny-budget": {"pii": {"input_action": "mask", "budget_ms": 0.01}, "fail": "closed"}},
    }
    gw = start_gateway(cfg)
    yield gw
    gw.stop()


def _post(gw, key: str, text: str, timeout: float = 30.0) -> httpx.Response:
    return httpx.post(f"{gw.url}/v1/chat/completions", timeout=timeout, headers={"authorization": f"Bearer {key}"},
                      json={"model": "gpt", "messages": [{"role": "user", "content": text}]})


def test_a_noisy_tenant_does_not_starve_another(two_tenants, primary):
    noisy: list[httpx.Response] = []
    senders = [threading.Thread(target=lambda: noisy.append(_post(two_tenants, "k-noisy", DENSE_100K)))
               for _ in range(2)]
    for s in senders:
        s.start()
    time.sleep(0.3)                      # both dense scans are running now
    quiet = []
    deadline = time.monotonic() + 2.5    # keep asking for a while, as the quiet tenant's users would
    while time.monotonic() < deadline:
        started = time.perf_counter()
        resp = _post(two_tenants, "k-quiet", f"please mail {EMAIL} today")
        quiet.append((resp, time.perf_counter() - started))
    for s in senders:
        s.join(timeout=60)
    assert len(quiet) >= 3
    for resp, took in quiet:
        assert resp.status_code == 200, resp.text
        assert resp.headers["x-sluice-guardrails"] == "pii=mask"
        assert took < 2.0
    sent = [r["body"]["messages"][0]["content"] for r in primary.requests()]
    assert sent and all(EMAIL not in s for s in sent)
    # The noisy tenant's own requests ran out of budget (or, on a fast machine, finished):
    # either way they are answered in about their budget, not after a minute.
    assert len(noisy) == 2
    for resp in noisy:
        assert resp.status_code in (200, 503), resp.text
        if resp.status_code == 503:
            assert resp.json()["error"]["code"] == "guardrail_unavailable"


def test_after_the_budget_the_noisy_tenant_gets_its_capacity_back(two_tenants):
    started = time.perf_counter()
    resp = _post(two_tenants, "k-noisy", DENSE_100K)
    assert resp.status_code in (200, 503)
    assert time.perf_counter() - started < 6.0
    # Its timed-out scan stopped within a chunk: its next short request is served within
    # its budget, not after the abandoned scan (about a minute of Presidio).
    follow = _post(two_tenants, "k-noisy", f"mail {EMAIL}")
    assert follow.status_code == 200, follow.text


def test_guardrail_unavailable_is_a_server_error_in_both_wire_formats(two_tenants):
    oai = openai.OpenAI(base_url=f"{two_tenants.url}/v1", api_key="k-tiny", max_retries=0)
    long_text = f"contact {EMAIL} " * 400
    with pytest.raises(openai.InternalServerError) as info:
        oai.chat.completions.create(model="gpt", messages=[{"role": "user", "content": long_text}])
    err = info.value
    assert err.status_code == 503
    # A server-side failure the client may retry, not a fault of the request.
    assert (err.type, err.code) == ("server_error", "guardrail_unavailable")
    assert "timed out" in err.message and EMAIL not in err.message
    claude = anthropic.Anthropic(base_url=two_tenants.url, api_key="k-tiny", max_retries=0)
    with pytest.raises(anthropic.InternalServerError) as ainfo:
        claude.messages.create(model="gpt", max_tokens=16, messages=[{"role": "user", "content": long_text}])
    assert ainfo.value.status_code == 503
    assert ainfo.value.body["error"]["type"] == "api_error"
