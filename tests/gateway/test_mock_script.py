"""The mock's scripted answers (POST /_mock/script): what drift tests make a provider do."""

from __future__ import annotations

import httpx
import pytest

from gateway.mock import create_mock_app


@pytest.fixture
async def mock():
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_mock_app()),
                                 base_url="http://mock") as client:
        yield client


def chat(prompt: str, **extra) -> dict:
    return {"model": "m1", "messages": [{"role": "user", "content": prompt}], **extra}


async def test_script_changes_text_model_fingerprint_and_finish_reason(mock):
    rules = [{"model": "m1", "text": "Bonjour, {prompt}", "response_model": "m1-2025",
              "system_fingerprint": "fp_new", "finish_reason": "length"}]
    assert (await mock.post("/_mock/script", json=rules)).json() == {"rules": 1}
    body = (await mock.post("/v1/chat/completions", json=chat("salut"))).json()
    assert body["choices"][0]["message"]["content"] == "Bonjour, salut"
    assert (body["model"], body["system_fingerprint"], body["choices"][0]["finish_reason"]) == \
        ("m1-2025", "fp_new", "length")
    stream = (await mock.post("/v1/chat/completions", json=chat("salut", stream=True))).text
    assert '"model":"m1-2025"' in stream and '"finish_reason":"length"' in stream and "fp_mock" not in stream
    other = (await mock.post("/v1/chat/completions", json={**chat("salut"), "model": "m2"})).json()
    assert other["model"] == "m2" and other["choices"][0]["message"]["content"].startswith("Mock answer")


async def test_script_words_jitter_fraction_and_json_override(mock):
    await mock.post("/_mock/script", json=[{"words": 40, "words_jitter": 5, "fraction": 0.5}])
    lengths = []
    for i in range(200):
        body = (await mock.post("/v1/chat/completions", json=chat(f"question {i}"))).json()
        lengths.append(body["usage"]["completion_tokens"])
    scripted = [n for n in lengths if n != 16]
    assert 60 <= len(scripted) <= 140 and all(35 <= n <= 45 for n in scripted)
    assert len(set(scripted)) > 5
    await mock.post("/_mock/script", json={"texts": ["one {prompt}", "two {prompt}", "three {prompt}"]})
    answers = {(await mock.post("/v1/chat/completions", json=chat(f"q{i}"))).json()["choices"][0]["message"]
               ["content"].split()[0] for i in range(30)}
    assert answers == {"one", "two", "three"}
    await mock.post("/_mock/script", json={"text": "not json"})
    body = (await mock.post("/v1/chat/completions",
                            json=chat("x", response_format={"type": "json_object"}))).json()
    assert body["choices"][0]["message"]["content"] == "not json"


async def test_script_on_anthropic_messages_and_reset(mock):
    await mock.post("/_mock/script", json={"response_model": "claude-next", "finish_reason": "max_tokens"})
    msg = {"model": "claude-x", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
    body = (await mock.post("/v1/messages", json=msg)).json()
    assert body["model"] == "claude-next" and body["stop_reason"] == "max_tokens"
    stream = (await mock.post("/v1/messages", json={**msg, "stream": True})).text
    assert '"model":"claude-next"' in stream and '"stop_reason":"max_tokens"' in stream
    assert (await mock.get("/_mock/script")).json() == [{"response_model": "claude-next",
                                                          "finish_reason": "max_tokens"}]
    await mock.delete("/_mock/script")
    assert (await mock.post("/v1/messages", json=msg)).json()["model"] == "claude-x"
    assert (await mock.post("/_mock/script", json={"bogus": 1})).status_code == 400
