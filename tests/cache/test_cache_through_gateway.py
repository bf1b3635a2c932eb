"""The cache through the gateway with the official SDKs: hits served without a provider
call, stream replay, request headers, tenant isolation, and a Redis outage."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest

from tests.gateway.conftest import gateway_config
from tests.gateway_server import start_gateway


def cached_gateway(primary, backup, tmp_path, model_cache_dir, redis_url=None):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "models").symlink_to(model_cache_dir)         # reuse the session's ONNX export
    cfg = gateway_config(primary, backup, keys=[{"key": "k-a", "tenant": "team-a"},
                                                {"key": "k-b", "tenant": "team-b"}])
    cfg["data_dir"] = str(data_dir)
    cfg["cache"] = {"enabled": True, "redis_url": redis_url, "redis_retry_after_s": 0.2,
                    "index_name": f"gw-{tmp_path.name}", "key_prefix": f"gw-{tmp_path.name}:"}
    return start_gateway(cfg)


@pytest.fixture(params=["embedded", "redis"])
def gw(request, primary, backup, tmp_path, model_cache_dir):
    url = request.getfixturevalue("redis_search").url if request.param == "redis" else None
    running = cached_gateway(primary, backup, tmp_path, model_cache_dir, url)
    yield running
    running.stop()


def oai(gw, key="k-a") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key, max_retries=0)


QUESTION = [{"role": "user", "content": "What is the boiling point of water at sea level in Celsius?"}]


def upstream_calls(mock) -> int:
    return sum(1 for r in mock.requests() if r["path"].endswith("/chat/completions"))


def test_exact_hit_skips_the_provider(gw, primary):
    first = oai(gw).chat.completions.with_raw_response.create(model="gpt", messages=QUESTION, temperature=0)
    second = oai(gw).chat.completions.with_raw_response.create(model="gpt", messages=QUESTION, temperature=0)
    assert first.headers["x-sluice-cache"] == "miss" and second.headers["x-sluice-cache"] == "hit"
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert upstream_calls(primary) == 1


def test_semantic_hit_on_paraphrase(gw, primary):
    oai(gw).chat.completions.create(model="gpt", messages=QUESTION)
    paraphrase = [{"role": "user", "content": "At sea level, what is the boiling point of water in Celsius?"}]
    resp = oai(gw).chat.completions.with_raw_response.create(model="gpt", messages=paraphrase)
    assert resp.headers["x-sluice-cache"] == "semantic-hit"
    assert float(resp.headers["x-sluice-cache-similarity"]) >= 0.9
    assert upstream_calls(primary) == 1


def test_no_hit_across_tenants_or_system_prompts(gw, primary):
    oai(gw).chat.completions.create(model="gpt", messages=QUESTION)
    other_tenant = oai(gw, "k-b").chat.completions.with_raw_response.create(model="gpt", messages=QUESTION)
    assert other_tenant.headers["x-sluice-cache"] == "miss"
    with_system = [{"role": "system", "content": "Answer like a pirate."}, *QUESTION]
    assert oai(gw).chat.completions.with_raw_response.create(
        model="gpt", messages=with_system).headers["x-sluice-cache"] == "miss"
    assert upstream_calls(primary) == 3


def test_stream_replay_and_streamed_answers_are_stored(gw, primary):
    plain = oai(gw).chat.completions.create(model="gpt", messages=QUESTION)
    chunks = list(oai(gw).chat.completions.create(model="gpt", messages=QUESTION, stream=True,
                                                  stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == plain.choices[0].message.content
    assert chunks[-1].usage is not None
    assert upstream_calls(primary) == 1
    # A streamed miss is stored once complete, then answers a plain request.
    other = [{"role": "user", "content": "Name the largest planet in the solar system."}]
    list(oai(gw).chat.completions.create(model="gpt", messages=other, stream=True))
    hit = oai(gw).chat.completions.with_raw_response.create(model="gpt", messages=other)
    assert hit.headers["x-sluice-cache"] == "hit"


def test_anthropic_stream_replay(gw, backup):
    claude = anthropic.Anthropic(base_url=gw.url, api_key="k-a", max_retries=0)
    ask = {"model": "claude", "max_tokens": 64, "messages": QUESTION}
    first = claude.messages.create(**ask)
    with claude.messages.stream(**ask) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == first.content[0].text and final.stop_reason == "end_turn"
    assert sum(1 for r in backup.requests() if r["path"] == "/v1/messages") == 1


def test_no_cache_and_no_store_headers(gw, primary):
    client = oai(gw)
    bypass = client.chat.completions.with_raw_response.create(
        model="gpt", messages=QUESTION, extra_headers={"x-sluice-cache": "no-store"})
    assert bypass.headers["x-sluice-cache"] == "miss"
    assert client.chat.completions.with_raw_response.create(
        model="gpt", messages=QUESTION).headers["x-sluice-cache"] == "miss"     # nothing was stored
    refreshed = client.chat.completions.with_raw_response.create(
        model="gpt", messages=QUESTION, extra_headers={"x-sluice-cache": "no-cache"})
    assert refreshed.headers["x-sluice-cache"] == "bypass"
    assert upstream_calls(primary) == 3


def test_errors_are_not_cached(gw):
    body = {"model": "all-down", "messages": QUESTION}
    assert httpx.post(f"{gw.url}/v1/chat/completions", json=body, headers={"authorization": "Bearer k-a"},
                      timeout=20).status_code == 502
    again = httpx.post(f"{gw.url}/v1/chat/completions", json=body, headers={"authorization": "Bearer k-a"},
                       timeout=20)
    assert again.status_code == 502 and again.headers["x-sluice-cache"] == "miss"


def test_metrics_say_whether_paraphrases_are_matched(primary, backup, tmp_path, model_cache_dir):
    from tests.redis_server import start_redis
    plain = start_redis(with_search=False)                   # no vector search: exact repeats only
    for name, url, expected in (("embedded", None, "1.0"), ("plain-redis", plain.url, "0.0")):
        (tmp_path / name).mkdir()
        running = cached_gateway(primary, backup, tmp_path / name, model_cache_dir, url)
        try:
            assert f"sluice_cache_semantic_available {expected}" in httpx.get(f"{running.url}/metrics").text, name
        finally:
            running.stop()
    plain.stop()


def test_redis_outage_fails_open_and_recovers(primary, backup, tmp_path, model_cache_dir):
    from tests.redis_server import start_redis
    redis = start_redis(with_search=True)
    running = cached_gateway(primary, backup, tmp_path, model_cache_dir, redis.url)
    try:
        client = oai(running)
        client.chat.completions.create(model="gpt", messages=QUESTION)
        redis.stop()
        down = client.chat.completions.with_raw_response.create(model="gpt", messages=QUESTION)
        assert down.parse().choices and down.headers["x-sluice-cache"] == "error"
        metrics = httpx.get(f"{running.url}/metrics").text
        assert 'sluice_cache_requests_total{operation="chat",status="error"} 1.0' in metrics
        redis.restart()
        import time
        deadline = time.monotonic() + 10
        status = None
        while time.monotonic() < deadline:
            client.chat.completions.create(model="gpt", messages=QUESTION)      # stores again once back
            status = client.chat.completions.with_raw_response.create(
                model="gpt", messages=QUESTION).headers["x-sluice-cache"]
            if status == "hit":
                break
            time.sleep(0.3)
        assert status == "hit"
    finally:
        running.stop()
        redis.stop()
