"""Text over `max_scan_chars` is handled by the `overflow` policy, in the caller's wire
format, and shows in the log (once per tenant and minute) and in /metrics."""

from __future__ import annotations

import logging

import anthropic
import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.gateway.conftest import gateway_config
from tests.gateway_server import start_gateway

EMAIL = "jane.doe@example.com"
LATE_EMAIL = "late.value@example.org"
# The report: a 7.8 MB prompt under the 8 MiB body limit passed with pii=error and no log.
HUGE = "the quick brown fox jumps over the lazy dog " * 177_273     # 7,800,012 chars


@pytest.fixture(scope="module")
def default_limits(primary, backup):
    """Guardrails configured as in the report: PII masking failing open, limits left at
    their defaults."""
    cfg = gateway_config(primary, backup, keys=[{"key": "k-open", "tenant": "open-pii"}])
    cfg["server"]["max_body_bytes"] = 8 * 1024 * 1024
    cfg["guardrails"] = {"tenants": {"open-pii": {"pii": {"input_action": "mask", "output_action": "off"},
                                                  "fail": "open"}}}
    gw = start_gateway(cfg)
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def small_limits(primary, backup):
    cfg = gateway_config(primary, backup, keys=[
        {"key": "k-prefix", "tenant": "prefix"},
        {"key": "k-fail-open", "tenant": "fail-open"},
        {"key": "k-fail-closed", "tenant": "fail-closed"},
    ])
    mask = {"input_action": "mask", "output_action": "off"}
    cfg["guardrails"] = {
        "max_scan_chars": 2000,
        "tenants": {
            "prefix": {"pii": mask, "overflow": "scan_prefix"},
            "fail-open": {"pii": mask, "injection": {}, "overflow": "fail", "fail": "open"},
            "fail-closed": {"pii": mask, "overflow": "fail", "fail": "closed"},
        },
    }
    gw = start_gateway(cfg)
    yield gw
    gw.stop()


def _metric(gw, name: str, **labels: str) -> float:
    text = httpx.get(f"{gw.url}/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def test_an_oversize_prompt_is_refused_naming_the_limit(default_limits, primary, caplog):
    caplog.set_level(logging.WARNING, logger="sluice.guardrails")
    oai = openai.OpenAI(base_url=f"{default_limits.url}/v1", api_key="k-open", max_retries=0, timeout=60)
    for _ in range(3):
        with pytest.raises(openai.APIStatusError) as info:
            oai.chat.completions.create(model="gpt", messages=[{"role": "user", "content": HUGE}])
        err = info.value
        assert err.status_code == 413
        assert (err.type, err.code) == ("invalid_request_error", "guardrail_scan_limit")
        assert "max_scan_chars" in err.message and "100,000" in err.message and f"{len(HUGE):,}" in err.message
    claude = anthropic.Anthropic(base_url=default_limits.url, api_key="k-open", max_retries=0, timeout=60)
    with pytest.raises(anthropic.ContentTooLargeError) as ainfo:
        claude.messages.create(model="gpt", max_tokens=16, messages=[{"role": "user", "content": HUGE}])
    assert ainfo.value.body["error"]["type"] == "request_too_large"
    assert "max_scan_chars" in ainfo.value.body["error"]["message"]
    assert primary.requests() == []
    # Logged once for the burst (never the text), counted every time.
    logged = [r for r in caplog.records if r.name == "sluice.guardrails" and "max_scan_chars" in r.getMessage()]
    assert len(logged) == 1, [r.getMessage() for r in logged]
    assert "open-pii" in logged[0].getMessage() and "quick brown" not in caplog.text
    assert _metric(default_limits, "sluice_guardrail_actions_total", guardrail="pii", action="block.oversize") == 4
    assert _metric(default_limits, "sluice_request_errors_total", error_type="guardrail_scan_limit") == 4


def test_under_the_limit_nothing_changes(default_limits, primary):
    resp = httpx.post(f"{default_limits.url}/v1/chat/completions", headers={"authorization": "Bearer k-open"},
                      json={"model": "gpt", "messages": [{"role": "user", "content": f"mail {EMAIL}"}]})
    assert resp.status_code == 200 and resp.headers["x-sluice-guardrails"] == "pii=mask"
    assert EMAIL not in primary.requests()[-1]["body"]["messages"][0]["content"]


def _ask(gw, key: str, *texts: str) -> httpx.Response:
    messages = [{"role": "user", "content": t} for t in texts]
    return httpx.post(f"{gw.url}/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                      json={"model": "gpt", "messages": messages})


def test_scan_prefix_scans_up_to_the_limit(small_limits, primary):
    first = f"mail {EMAIL} " + "filler words " * 100              # 1,326 chars
    second = "more filler " * 80 + f"then {LATE_EMAIL}"            # starts under the limit, ends past it
    resp = _ask(small_limits, "k-prefix", first, second)
    assert resp.status_code == 200, resp.text
    sent = [m["content"] for m in primary.requests()[-1]["body"]["messages"]]
    assert EMAIL not in sent[0] and "<EMAIL_ADDRESS_1>" in sent[0]
    # Past max_scan_chars the text goes on unscanned, as this policy chose; the tail is intact.
    assert sent[1].endswith(f"then {LATE_EMAIL}")
    assert resp.headers["x-sluice-guardrails"] == "pii=mask"
    assert _metric(small_limits, "sluice_guardrail_actions_total", guardrail="pii", action="mask.prefix") >= 1


def test_overflow_fail_follows_the_fail_policy(small_limits, primary):
    long_text = f"mail {EMAIL} " + "filler words " * 200
    opened = _ask(small_limits, "k-fail-open", long_text)
    assert opened.status_code == 200
    assert opened.headers["x-sluice-guardrails"] == "pii=error;injection=error"
    assert primary.requests()[-1]["body"]["messages"][0]["content"] == long_text      # passed unscanned
    assert _metric(small_limits, "sluice_guardrail_actions_total", guardrail="pii", action="error.oversize") == 1
    closed = _ask(small_limits, "k-fail-closed", long_text)
    assert closed.status_code == 413
    assert closed.json()["error"]["code"] == "guardrail_scan_limit"
    assert "2,000" in closed.json()["error"]["message"]
