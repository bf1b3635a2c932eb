"""What every answer looks like to an SDK: errors off the pipeline in the caller's format,
roles checked before they travel, one rule for the response `model`, the same headers on
cache hits as on provider answers."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest

from tests.gateway.conftest import gateway_config
from tests.gateway_server import start_gateway


def test_wrong_method_is_405_in_openai_format(gateway):
    resp = httpx.get(f"{gateway.url}/v1/chat/completions")
    assert resp.status_code == 405 and "POST" in resp.headers["allow"]
    error = resp.json()["error"]
    assert error["code"] == "method_not_allowed" and "GET" in error["message"]


def test_wrong_method_is_405_in_anthropic_format(gateway):
    resp = httpx.get(f"{gateway.url}/v1/messages")
    assert resp.status_code == 405
    assert resp.json()["type"] == "error" and resp.json()["error"]["type"] == "invalid_request_error"


def test_unknown_path_is_404_in_the_callers_format(gateway, oai, claude):
    resp = httpx.post(f"{gateway.url}/v1/nothing-here", json={})
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "unknown_url"
    resp = httpx.get(f"{gateway.url}/v2/models", headers={"anthropic-version": "2023-06-01"})
    assert resp.status_code == 404 and resp.json()["error"]["type"] == "not_found_error"
    with pytest.raises(openai.NotFoundError):
        oai.post("/no/such/endpoint", cast_to=object, body={})
    with pytest.raises(anthropic.NotFoundError):
        claude.post("/v1/no-such-endpoint", cast_to=object, body={})


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", {"model": "gpt", "messages": [{"role": "wizard", "content": "abracadabra"}]}),
    ("/v1/messages", {"model": "claude", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}),
])
def test_unknown_role_is_a_400_and_never_sent(gateway, primary, backup, path, body):
    resp = httpx.post(f"{gateway.url}{path}", json=body)
    assert resp.status_code == 400
    assert "messages[0].role" in resp.text
    assert primary.requests() == [] and backup.requests() == []


# The rule: `model` in an answer names the model that produced it, as its provider names it
# (the upstream model), whichever format the caller and the provider speak, streamed or not.
@pytest.mark.parametrize("public, upstream", [("gpt", "m1"), ("claude", "claude-x")])
def test_response_model_is_the_upstream_model_for_openai_callers(oai, public, upstream):
    messages = [{"role": "user", "content": "which model?"}]
    assert oai.chat.completions.create(model=public, messages=messages).model == upstream
    chunks = list(oai.chat.completions.create(model=public, messages=messages, stream=True))
    assert {c.model for c in chunks} == {upstream}


@pytest.mark.parametrize("public, upstream", [("gpt", "m1"), ("claude", "claude-x")])
def test_response_model_is_the_upstream_model_for_anthropic_callers(claude, public, upstream):
    messages = [{"role": "user", "content": "which model?"}]
    assert claude.messages.create(model=public, max_tokens=32, messages=messages).model == upstream
    with claude.messages.stream(model=public, max_tokens=32, messages=messages) as stream:
        assert stream.get_final_message().model == upstream


@pytest.fixture(scope="module")
def cached_gateway(primary, backup):
    gw = start_gateway(gateway_config(primary, backup, cache={"enabled": True, "default": {"mode": "exact"}}))
    yield gw
    gw.stop()


@pytest.mark.parametrize("stream", [False, True])
def test_cache_hits_carry_the_same_headers_and_model(cached_gateway, stream):
    client = openai.OpenAI(base_url=f"{cached_gateway.url}/v1", api_key="x", max_retries=0)
    messages = [{"role": "user", "content": f"cache me, stream={stream}"}]

    def ask():
        raw = client.chat.completions.with_raw_response.create(model="claude", messages=messages, stream=stream)
        answer = raw.parse()
        model = {c.model for c in answer} if stream else {answer.model}
        return raw.headers, model

    first, first_model = ask()
    for _ in range(50):
        second, second_model = ask()
        if second.get("x-sluice-cache") == "hit":
            break
    assert first["x-sluice-cache"] == "miss" and second["x-sluice-cache"] == "hit"
    assert first_model == second_model == {"claude-x"}
    for name in ("x-sluice-request-id", "x-sluice-deployment", "x-sluice-attempts"):
        assert name in second
    assert second["x-sluice-deployment"] == "cache" and second["x-sluice-attempts"] == "0"
