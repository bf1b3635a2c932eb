"""Request limits (gateway/wire/limits.py): nesting depth, messages, n, output tokens.

Each is a 400 in the caller's wire format naming the field and the limit, before any
guardrail, cache or provider sees the request; none is ever a 500 or a logged traceback.
"""

from __future__ import annotations

import logging

import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import ConfigError, parse_config
from gateway.wire.limits import OUTPUT_TOKENS_CEILING, RequestLimits, nesting_within
from tests.gateway.conftest import gateway_config
from tests.gateway_server import start_gateway

USER = [{"role": "user", "content": "hi"}]
BASES = {
    "/v1/chat/completions": {"model": "gpt", "messages": USER},
    "/v1/messages": {"model": "claude", "max_tokens": 16, "messages": USER},
    "/v1/embeddings": {"model": "embed", "input": "hi"},
    "/v1/responses": {"model": "gpt", "input": "hi"},
}


def nested(levels: int) -> bytes:
    """JSON arrays `levels` deep."""
    return b"[" * levels + b"]" * levels


def with_field(path: str, name: str, raw_value: bytes) -> bytes:
    return orjson.dumps(BASES[path])[:-1] + b',"' + name.encode() + b'":' + raw_value + b"}"


def assert_400(resp: httpx.Response, path: str, needle: str, param: str | None = None) -> None:
    assert resp.status_code == 400, resp.text
    body = resp.json()
    if path == "/v1/messages":
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error", body
        assert needle in body["error"]["message"], body
    else:
        assert body["error"]["type"] == "invalid_request_error" and needle in body["error"]["message"], body
        if param is not None:
            assert body["error"]["param"] == param, body


@pytest.fixture(scope="module")
def limited_gateway(primary, backup):
    """Limits set by configuration, a model with an output cap, and the exact cache on."""
    cfg = gateway_config(primary, backup)
    cfg["server"].update(max_json_depth=16, max_messages=10, max_n=2)
    cfg["models"]["capped"] = {"max_output_tokens": 100, "deployments": [{"provider": "primary", "model": "m1"}]}
    cfg["cache"] = {"enabled": True, "default": {"mode": "exact"}}
    gw = start_gateway(cfg)
    yield gw
    gw.stop()


# -- nesting depth -----------------------------------------------------------------------

@pytest.mark.parametrize("path", list(BASES))
@pytest.mark.parametrize("levels", [64, 253, 254, 300, 1000, 1023])
def test_deep_json_is_a_400_in_the_callers_format(gateway, caplog, path, levels):
    # The body is level 1, so a field holding 64 levels of arrays nests 65 deep: one too many.
    with caplog.at_level(logging.ERROR):
        resp = httpx.post(f"{gateway.url}{path}", content=with_field(path, "x", nested(levels)))
    assert_400(resp, path, "nested too deeply: the limit is 64 levels")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("path", list(BASES))
def test_nesting_at_the_limit_is_served(gateway, path):
    resp = httpx.post(f"{gateway.url}{path}", content=with_field(path, "x", nested(63)))
    assert resp.status_code == 200, resp.text


def test_deep_json_with_the_cache_on_logs_nothing(limited_gateway, caplog):
    # Before the limit, the cache key's recursion logged a 158 KB traceback per 2 KB request.
    for levels in (16, 300, 1023):
        with caplog.at_level(logging.ERROR):
            resp = httpx.post(f"{limited_gateway.url}/v1/chat/completions",
                              content=with_field("/v1/chat/completions", "x", nested(levels)))
        assert_400(resp, "/v1/chat/completions", "the limit is 16 levels")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    ok = httpx.post(f"{limited_gateway.url}/v1/chat/completions",
                    content=with_field("/v1/chat/completions", "x", nested(14)))
    assert ok.status_code == 200, ok.text


def _schema(levels: int) -> dict:
    """A JSON schema `levels` objects deep, each property an array of the next (OpenAI's
    structured outputs allow ten levels)."""
    schema: dict = {"type": "string"}
    for i in range(levels):
        schema = {"type": "object", "properties": {f"p{i}": {"type": "array", "items": schema}},
                  "required": [f"p{i}"], "additionalProperties": False}
    return schema


def test_a_ten_level_tool_schema_is_well_inside_the_default(gateway):
    body = {"model": "gpt", "messages": USER,
            "tools": [{"type": "function", "function": {"name": "f", "parameters": _schema(10)}}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": _schema(10)}}}
    raw = orjson.dumps(body)
    assert not nesting_within(raw, body, 34) and nesting_within(raw, body, 35)   # 35 deep
    assert httpx.post(f"{gateway.url}/v1/chat/completions", content=raw).status_code == 200


def _depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


json_values = st.recursive(st.none() | st.integers(-1000, 1000) | st.text(alphabet="[]{}\"\\ab", max_size=6),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                                       max_size=3),
                           max_leaves=30)


@settings(max_examples=300, derandomize=True, database=None)
@given(st.dictionaries(st.text(max_size=3), json_values, max_size=3), st.integers(1, 12), st.booleans())
def test_nesting_within_agrees_with_the_depth(body, limit, indent):
    # Brackets inside strings must never make a deep body look shallow.
    raw = orjson.dumps(body, option=orjson.OPT_INDENT_2 if indent else 0)
    assert nesting_within(raw, body, limit) == (_depth(body) <= limit)


# -- messages, n, output tokens ---------------------------------------------------------------

@pytest.mark.parametrize("path, field", [("/v1/chat/completions", "messages"), ("/v1/messages", "messages"),
                                         ("/v1/responses", "input")])
def test_more_messages_than_the_limit_is_a_400(gateway, path, field):
    many = [{"role": "user", "content": ""}] * 2049
    resp = httpx.post(f"{gateway.url}{path}", json={**BASES[path], field: many})
    assert_400(resp, path, f"Invalid '{field}': 2049 items is more than the limit of 2048", param=field)


def test_messages_up_to_the_limit_are_served(gateway):
    resp = httpx.post(f"{gateway.url}/v1/chat/completions",
                      json={"model": "gpt", "messages": [{"role": "user", "content": ""}] * 2048})
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize("n", [0, -1, 17, 129, 10**6])
def test_n_outside_the_limit_is_a_400(gateway, n):
    resp = httpx.post(f"{gateway.url}/v1/chat/completions", json={**BASES["/v1/chat/completions"], "n": n})
    assert_400(resp, "/v1/chat/completions", "Invalid 'n': expected an integer between 1 and 16", param="n")


def test_n_at_the_limit_is_served(gateway):
    resp = httpx.post(f"{gateway.url}/v1/chat/completions", json={**BASES["/v1/chat/completions"], "n": 16})
    assert resp.status_code == 200 and len(resp.json()["choices"]) == 16


TOKEN_FIELDS = [("/v1/chat/completions", "max_tokens"), ("/v1/chat/completions", "max_completion_tokens"),
                ("/v1/messages", "max_tokens"), ("/v1/responses", "max_output_tokens")]


@pytest.mark.parametrize("path, field", TOKEN_FIELDS)
@pytest.mark.parametrize("value", [2**31, 2**62, 2**63, 2**64 - 1])
def test_absurd_output_tokens_are_a_400(gateway, path, field, value):
    resp = httpx.post(f"{gateway.url}{path}", content=with_field(path, field, str(value).encode()))
    assert_400(resp, path, f"Invalid '{field}': {value} is more than the limit of {OUTPUT_TOKENS_CEILING}",
               param=field)


@pytest.mark.parametrize("path, field", TOKEN_FIELDS)
@pytest.mark.parametrize("value", [0, -1, -(2**63)])
def test_output_tokens_below_one_are_a_400(gateway, path, field, value):
    resp = httpx.post(f"{gateway.url}{path}", json={**BASES[path], field: value})
    assert_400(resp, path, f"Invalid '{field}': expected an integer of at least 1, got {value}", param=field)


@pytest.mark.parametrize("path, field", TOKEN_FIELDS)
def test_output_tokens_at_the_ceiling_are_served(gateway, path, field):
    resp = httpx.post(f"{gateway.url}{path}", json={**BASES[path], field: OUTPUT_TOKENS_CEILING})
    assert resp.status_code == 200, resp.text


def test_a_models_output_cap_and_configured_limits(limited_gateway):
    url = limited_gateway.url
    body = {"model": "capped", "messages": USER}
    assert httpx.post(f"{url}/v1/chat/completions", json={**body, "max_tokens": 100}).status_code == 200
    resp = httpx.post(f"{url}/v1/chat/completions", json={**body, "max_completion_tokens": 101})
    assert_400(resp, "/v1/chat/completions",
               "Invalid 'max_completion_tokens': 101 is more than the limit of 100 for model 'capped'",
               param="max_completion_tokens")
    resp = httpx.post(f"{url}/v1/messages", json={**body, "max_tokens": 101})
    assert_400(resp, "/v1/messages", "101 is more than the limit of 100 for model 'capped'")
    # Other models keep the global ceiling only.
    assert httpx.post(f"{url}/v1/chat/completions", json={"model": "gpt", "messages": USER,
                                                          "max_tokens": 101}).status_code == 200
    resp = httpx.post(f"{url}/v1/chat/completions", json={**body, "n": 3})
    assert_400(resp, "/v1/chat/completions", "between 1 and 2", param="n")
    resp = httpx.post(f"{url}/v1/chat/completions", json={**body, "messages": USER * 11})
    assert_400(resp, "/v1/chat/completions", "11 items is more than the limit of 10", param="messages")
    # The served OpenAPI document states this gateway's limits.
    schemas = httpx.get(f"{url}/openapi.json").json()["components"]["schemas"]
    chat = schemas["ChatCompletionRequest"]["properties"]
    assert chat["messages"]["maxItems"] == 10 and chat["n"]["maximum"] == 2


def test_embeddings_do_not_stream(gateway):
    # Was a 200 text/event-stream whose body was one JSON document.
    resp = httpx.post(f"{gateway.url}/v1/embeddings", json={**BASES["/v1/embeddings"], "stream": True})
    assert_400(resp, "/v1/embeddings", "Embeddings are not streamed", param="stream")
    resp = httpx.post(f"{gateway.url}/v1/embeddings", json={**BASES["/v1/embeddings"], "stream": False})
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"


@pytest.mark.parametrize("server, model, error", [
    ({"max_json_depth": 255}, {}, "server.max_json_depth"),
    ({"max_json_depth": 4}, {}, "server.max_json_depth"),
    ({"max_n": 0}, {}, "server.max_n"),
    ({"max_n": 129}, {}, "server.max_n"),
    ({"max_messages": 0}, {}, "server.max_messages"),
    ({}, {"max_output_tokens": 0}, "models.m.max_output_tokens"),
    ({}, {"max_output_tokens": 2**31}, "models.m.max_output_tokens"),
])
def test_limits_are_validated_in_config(server, model, error):
    raw = {"server": server, "providers": {"p": {"type": "openai", "base_url": "http://x"}},
           "models": {"m": {"deployments": [{"provider": "p", "model": "x"}], **model}}}
    with pytest.raises(ConfigError, match=error.replace(".", r"\.")):
        parse_config(raw, {})


def test_limits_default_from_config():
    cfg = parse_config({"providers": {"p": {"type": "openai", "base_url": "http://x"}},
                        "models": {"m": {"deployments": [{"provider": "p", "model": "x"}]},
                                   "c": {"deployments": [{"provider": "p", "model": "x"}], "max_output_tokens": 9}}},
                       {})
    assert RequestLimits.from_config(cfg) == RequestLimits(64, 2048, 16, {"c": 9})


def test_the_highest_depth_setting_is_still_served_end_to_end(primary, backup, caplog):
    # 200 (the most server.max_json_depth allows) leaves orjson's 254 room for what the
    # gateway wraps around a body: translation, the cache key, the cached answer.
    cfg = gateway_config(primary, backup)
    cfg["server"]["max_json_depth"] = 200
    cfg["cache"] = {"enabled": True, "default": {"mode": "exact"}}
    gw = start_gateway(cfg)
    try:
        deep_schema: dict = {"type": "object"}
        for _ in range(95):                                     # two levels each: 191 deep
            deep_schema = {"type": "object", "properties": {"p": deep_schema}}
        cases = [(path, {**body, "x": orjson.loads(nested(199))}) for path, body in BASES.items()]
        cases += [("/v1/chat/completions", {**BASES["/v1/chat/completions"], "model": "claude", "tools": [
                      {"type": "function", "function": {"name": "f", "parameters": deep_schema}}]}),
                  ("/v1/messages", {**BASES["/v1/messages"], "model": "gpt",
                                    "tools": [{"name": "f", "input_schema": deep_schema}]})]
        with caplog.at_level(logging.ERROR):
            for path, body in cases:
                raw = orjson.dumps(body)
                assert nesting_within(raw, body, 200) and not nesting_within(raw, body, 190)
                for _ in range(2):                              # a miss, then a cache hit
                    resp = httpx.post(f"{gw.url}{path}", content=raw)
                    assert resp.status_code == 200, (path, resp.text)
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    finally:
        gw.stop()
