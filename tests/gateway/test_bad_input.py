"""Bad input gets the right status in the caller's wire format, and the gateway keeps serving."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest

from tests.gateway.conftest import TEAM_A_KEY, TEAM_B_KEY


@pytest.mark.parametrize("body, status, needle", [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (b'{"messages": [{"role": "user", "content": "x"}]}', 400, "'model'"),
    (b'{"model": 5, "messages": []}', 400, "'model'"),
    (b'{"model": "gpt", "messages": "hello"}', 400, "'messages'"),
    (b'{"model": "gpt", "messages": [{"content": "no role"}]}', 400, "messages[0]"),
    (b'{"model": "gpt", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}', 400, "'stream'"),
    (b'{"model": "gpt", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1.5}', 400, "max_tokens"),
    (b'{"model": "nope", "messages": [{"role": "user", "content": "x"}]}', 404, "does not exist"),
])
def test_openai_format_errors(gateway, body, status, needle):
    resp = httpx.post(f"{gateway.url}/v1/chat/completions", content=body,
                      headers={"content-type": "application/json"})
    assert resp.status_code == status
    err = resp.json()["error"]
    assert needle in err["message"] and {"message", "type", "code"} <= set(err)
    assert resp.headers["x-sluice-request-id"]


def test_anthropic_format_errors(gateway):
    resp = httpx.post(f"{gateway.url}/v1/messages", json={"model": "claude", "messages": [{"role": "user",
                                                                                           "content": "x"}]})
    assert resp.status_code == 400
    assert resp.json() == {"type": "error", "error": {"type": "invalid_request_error",
                                                      "message": "Missing required parameter: 'max_tokens'"}}
    resp = httpx.post(f"{gateway.url}/v1/messages", content=b"{oops")
    assert resp.status_code == 400 and resp.json()["type"] == "error"


def test_sdk_sees_not_found(oai, claude):
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="unknown-model", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.create(model="unknown-model", max_tokens=5, messages=[{"role": "user", "content": "x"}])


def test_oversized_body_is_413(gateway):
    big = "x" * (70 * 1024)
    resp = httpx.post(f"{gateway.url}/v1/chat/completions",
                      json={"model": "gpt", "messages": [{"role": "user", "content": big}]})
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "request_too_large"
    resp = httpx.post(f"{gateway.url}/v1/messages",
                      json={"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": big}]})
    assert resp.status_code == 413 and resp.json()["error"]["type"] == "request_too_large"


def test_embeddings_on_anthropic_only_model_is_400(gateway):
    resp = httpx.post(f"{gateway.url}/v1/embeddings", json={"model": "claude", "input": "x"})
    assert resp.status_code == 400 and "embeddings" in resp.json()["error"]["message"]


def test_gateway_keeps_serving_after_bad_input(gateway, oai):
    for _ in range(20):
        httpx.post(f"{gateway.url}/v1/chat/completions", content=b"\xff\xfe garbage")
    assert oai.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "still up"}]).choices


def test_keys_required_and_scoped(keyed_gateway, primary):
    url = keyed_gateway.url
    body = {"model": "gpt", "messages": [{"role": "user", "content": "x"}]}
    assert httpx.post(f"{url}/v1/chat/completions", json=body).status_code == 401
    wrong = httpx.post(f"{url}/v1/chat/completions", json=body, headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "authentication_error"
    assert "nope" not in wrong.text
    ok = openai.OpenAI(base_url=f"{url}/v1", api_key=TEAM_A_KEY, max_retries=0)
    assert ok.chat.completions.create(**body).choices
    with pytest.raises(openai.PermissionDeniedError):
        ok.chat.completions.create(model="claude", messages=body["messages"])
    assert {m.id for m in ok.models.list()} == {"gpt"}
    # Anthropic SDK sends x-api-key.
    team_b = anthropic.Anthropic(base_url=url, api_key=TEAM_B_KEY, max_retries=0)
    assert team_b.messages.create(model="claude", max_tokens=5, messages=body["messages"]).content
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=url, api_key="bad", max_retries=0).messages.create(
            model="claude", max_tokens=5, messages=body["messages"])
    # The gateway key never reaches a provider.
    assert TEAM_A_KEY not in str(primary.requests())
