"""`POST /v1/feedback` through a real gateway (telemetry on chDB, mock providers): the round
trip into the `feedback` table, tenant isolation, validation, and the implicit signals
(regenerate, abandoned stream)."""

from __future__ import annotations

import itertools
import time

import anthropic
import httpx
import openai
import pytest

from gateway.feedback_store import RecentRequests
from tests.conftest import PRIMARY_KEY
from tests.gateway_server import start_gateway
from tests.mock_server import start_mock

KEY_A = "sluice-feedback-team-a"
KEY_B = "sluice-feedback-team-b"
_db = itertools.count()


@pytest.fixture(scope="module")
def fed(primary, chdb_url, ch):
    database = f"gw_feedback_{next(_db)}"
    slow_url, stop_slow = start_mock(tokens_per_second=20, output_tokens=200)     # a 10 s stream
    gw = start_gateway({
        "telemetry": {"clickhouse_url": chdb_url, "database": database, "flush_interval_s": 0.05,
                      "writer": "thread"},
        "cache": {"enabled": False},
        "keys": [{"key": KEY_A, "tenant": "team-a", "name": "a"}, {"key": KEY_B, "tenant": "team-b", "name": "b"}],
        "providers": {"primary": {"type": "openai", "base_url": f"{primary.url}/v1", "api_key": PRIMARY_KEY},
                      "slow": {"type": "openai", "base_url": f"{slow_url}/v1"}},
        "models": {"gpt": {"deployments": [{"provider": "primary", "model": "m1"}]},
                   "slow": {"deployments": [{"provider": "slow", "model": "m1"}]}},
        "router": {"retries": 0},
        "feedback": {"implicit": {"regenerate_window_s": 30}, "max_comment_chars": 50, "lookup_timeout_s": 0.5},
    })
    yield gw, database
    gw.stop()
    stop_slow()
    ch.command(f"DROP DATABASE IF EXISTS `{database}`")


def client(gw, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key, max_retries=0)


def chat(gw, key: str, content: str, **extra) -> httpx.Headers:
    resp = client(gw, key).chat.completions.with_raw_response.create(
        model="gpt", messages=[{"role": "user", "content": content}], **extra)
    return resp.headers


def post_feedback(gw, key: str | None, body, **headers: str) -> httpx.Response:
    if key:
        headers["authorization"] = f"Bearer {key}"
    return httpx.post(f"{gw.url}/v1/feedback", json=body, headers=headers, timeout=10)


def feedback_rows(ch, database: str, where: str, expect: int = 1, timeout_s: float = 5.0) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while True:
        rows = list(ch.query(f"SELECT * FROM `{database}`.feedback WHERE {where} ORDER BY ts").named_results())
        if len(rows) >= expect or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def wait_logged(ch, database: str, request_id: str) -> None:
    deadline = time.monotonic() + 5
    while not ch.query(f"SELECT count() FROM `{database}`.llm_requests WHERE request_id = %(r)s",
                       parameters={"r": request_id}).result_rows[0][0]:
        assert time.monotonic() < deadline, "the request row never arrived"
        time.sleep(0.05)


def test_feedback_round_trip_into_clickhouse(fed, ch):
    gw, database = fed
    headers = chat(gw, KEY_A, "rate me please")
    request_id, trace_id = headers["x-sluice-request-id"], headers["x-sluice-trace-id"]
    resp = post_feedback(gw, KEY_A, {"request_id": request_id, "thumbs": "up", "kind": "accept",
                                     "comment": "spot on", "user": "end-user-7"})
    assert resp.status_code == 202, resp.text
    answer = resp.json()
    assert answer["object"] == "feedback" and answer["status"] == "accepted"
    assert answer["request_id"] == request_id and answer["trace_id"] == trace_id
    [row] = feedback_rows(ch, database, f"feedback_id = '{answer['id']}'")
    assert row["request_id"] == request_id and row["trace_id"] == trace_id
    assert (row["tenant"], row["key_id"], row["user"], row["source"], row["kind"]) == \
        ("team-a", "a", "end-user-7", "explicit", "accept")
    assert row["score"] == 1.0 and row["comment"] == "spot on" and row["correction"] == ""
    assert (row["public_model"], row["deployment"]) == ("gpt", "primary/m1")
    wait_logged(ch, database, request_id)
    logged = ch.query(f"SELECT toString(prompt_fingerprint) FROM `{database}`.llm_requests "
                      f"WHERE request_id = '{request_id}'").result_rows[0][0]
    assert row["prompt_fingerprint"] == logged


def test_feedback_found_in_clickhouse_when_this_process_forgot_it(fed, ch):
    """The look-up path a feedback on another replica's request takes: `llm_requests`."""
    gw, database = fed
    headers = chat(gw, KEY_A, "an older answer", user="asker-9")
    request_id, trace_id = headers["x-sluice-request-id"], headers["x-sluice-trace-id"]
    wait_logged(ch, database, request_id)
    store = gw.gateway.feedback.store
    store.recent = RecentRequests(0)               # as if another replica had answered it
    try:
        ok = post_feedback(gw, KEY_A, {"trace_id": trace_id.upper(), "score": 0.25, "correction": "Paris"})
        assert ok.status_code == 202, ok.text
        assert ok.json()["request_id"] == request_id
        other = post_feedback(gw, KEY_B, {"request_id": request_id, "thumbs": "down"})
        assert other.status_code == 404 and other.json()["error"]["code"] == "request_not_found"
    finally:
        store.recent = RecentRequests(store.cfg.recent_requests)
    [row] = feedback_rows(ch, database, f"request_id = '{request_id}'")
    assert row["score"] == 0.25 and row["kind"] == "rating" and row["correction"] == "Paris"
    assert row["user"] == "asker-9"            # no user in the feedback: the rated request's


def test_a_key_rates_its_own_tenants_requests_only(fed, ch):
    gw, database = fed
    request_id = chat(gw, KEY_A, "team a's question")["x-sluice-request-id"]
    theirs = post_feedback(gw, KEY_B, {"request_id": request_id, "thumbs": "down"})
    unknown = post_feedback(gw, KEY_B, {"request_id": "0" * 24, "thumbs": "down"})
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json()["error"]["code"] == unknown.json()["error"]["code"] == "request_not_found"
    assert request_id in theirs.json()["error"]["message"]           # names what was asked, nothing more
    anthropic_shape = post_feedback(gw, KEY_B, {"request_id": request_id, "score": 0},
                                    **{"anthropic-version": "2023-06-01"})
    assert anthropic_shape.status_code == 404
    assert anthropic_shape.json()["type"] == "error" and anthropic_shape.json()["error"]["type"] == "not_found_error"
    assert post_feedback(gw, None, {"request_id": request_id, "score": 1}).status_code == 401
    assert post_feedback(gw, "not-a-key", {"request_id": request_id, "score": 1}).status_code == 401
    assert feedback_rows(ch, database, f"request_id = '{request_id}'", expect=1, timeout_s=0.5) == []


@pytest.mark.parametrize(("body", "field", "words"), [
    ({"thumbs": "up"}, "request_id", "exactly one"),
    ({"request_id": "a" * 24, "trace_id": "b" * 32, "thumbs": "up"}, "request_id", "exactly one"),
    ({"request_id": "a" * 24, "score": 1.5}, "score", "0 to 1"),
    ({"request_id": "a" * 24, "score": -0.1}, "score", "0 to 1"),
    ({"request_id": "a" * 24, "score": True}, "score", "number"),
    ({"request_id": "a" * 24, "score": "0.5"}, "score", "number"),
    ({"request_id": "a" * 24, "score": 1, "thumbs": "up"}, "score", "not both"),
    ({"request_id": "a" * 24, "thumbs": "sideways"}, "thumbs", '"up" or "down"'),
    ({"request_id": "a" * 24, "thumbs": {}}, "thumbs", '"up" or "down"'),
    ({"request_id": "a" * 24, "thumbs": "up", "kind": ["accept"]}, "kind", "lower-case"),
    ({"request_id": ["a"], "thumbs": "up"}, "request_id", "request id"),
    ({"request_id": "a" * 24, "thumbs": "up", "kind": "Not A Kind"}, "kind", "lower-case"),
    ({"request_id": "a" * 24, "comment": "x" * 51}, "comment", "longer than 50"),
    ({"request_id": "a" * 24, "comment": 7}, "comment", "string"),
    ({"request_id": "a" * 24}, "score", "Nothing to record"),
    ({"request_id": "a" * 24, "thumbs": "up", "rating": 5}, "rating", "Unknown field"),
    ({"trace_id": "not-hex", "thumbs": "up"}, "trace_id", "32 hexadecimal"),
    ({"request_id": "has spaces", "thumbs": "up"}, "request_id", "request id"),
    ({"request_id": "a" * 24 + "\n", "thumbs": "up"}, "request_id", "request id"),
    ({"trace_id": "b" * 32 + "\n", "thumbs": "up"}, "trace_id", "32 hexadecimal"),
    ({"request_id": "a" * 24, "thumbs": "up", "kind": "accept\n"}, "kind", "lower-case"),
])
def test_invalid_feedback_is_a_400_naming_the_field(fed, body, field, words):
    gw, _ = fed
    resp = post_feedback(gw, KEY_A, body)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["param"] == field and words in error["message"], error


def test_not_json_and_not_an_object_are_400(fed):
    gw, _ = fed
    for raw in (b"{nope", b"[1, 2]"):
        resp = httpx.post(f"{gw.url}/v1/feedback", content=raw, timeout=5,
                          headers={"authorization": f"Bearer {KEY_A}", "content-type": "application/json"})
        assert resp.status_code == 400


def test_clickhouse_unavailable_is_a_503_with_retry_after(fed, monkeypatch):
    gw, _ = fed
    store = gw.gateway.feedback.store

    def broken(purpose, timeout_s):
        raise ConnectionRefusedError("ClickHouse is down")

    monkeypatch.setattr(store, "_client", broken)
    resp = post_feedback(gw, KEY_A, {"request_id": "c" * 24, "thumbs": "up"})
    assert resp.status_code == 503 and resp.headers["retry-after"] == "5"
    assert resp.json()["error"]["code"] == "feedback_unavailable"
    assert "down" not in resp.json()["error"]["message"]        # the internal error stays in the log


def test_a_slow_request_log_is_a_503_within_the_timeout(fed, monkeypatch):
    gw, _ = fed
    store = gw.gateway.feedback.store

    def slow(tenant, request_id, trace_id):
        time.sleep(1.5)
        return None

    monkeypatch.setattr(store, "_lookup", slow)
    started = time.monotonic()
    resp = post_feedback(gw, KEY_A, {"request_id": "d" * 24, "thumbs": "up"})
    assert resp.status_code == 503 and "within 0.5 s" in resp.json()["error"]["message"]
    assert time.monotonic() - started < 1.4


def test_regenerate_is_recorded_for_the_earlier_answer(fed, ch):
    gw, database = fed
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "name a river"}]
    oai = client(gw, KEY_A)

    def ask(msgs, user):
        resp = oai.chat.completions.with_raw_response.create(model="gpt", messages=msgs, user=user)
        return resp.headers["x-sluice-request-id"]

    first = ask(messages, "regen-user")
    second = ask(messages, "regen-user")                                   # the user pressed "regenerate"
    third = ask(messages + [{"role": "assistant", "content": "The Nile."}], "regen-user")   # kept answer: same prefix
    ask(messages, "someone-else")                                          # another user: not a regenerate
    oai.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "no user field"}])
    oai.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "no user field"}])
    rows = feedback_rows(ch, database, "source = 'implicit' AND kind = 'regenerate'", expect=2)
    assert [r["request_id"] for r in rows] == [first, second]
    assert all(r["score"] == 0.0 and r["user"] == "regen-user" and r["tenant"] == "team-a" for r in rows)
    assert third not in {r["request_id"] for r in rows}
    time.sleep(0.3)
    assert len(feedback_rows(ch, database, "source = 'implicit' AND kind = 'regenerate'")) == 2


def test_regenerate_through_the_anthropic_sdk_names_its_user_in_metadata(fed, ch):
    gw, database = fed
    claude = anthropic.Anthropic(base_url=gw.url, api_key=KEY_A, max_retries=0)

    def ask() -> str:
        return claude.messages.with_raw_response.create(
            model="gpt", max_tokens=32, system="Answer in one word.", metadata={"user_id": "claude-user"},
            messages=[{"role": "user", "content": "a colour?"}]).headers["x-sluice-request-id"]

    first = ask()
    ask()
    [row] = feedback_rows(ch, database, "kind = 'regenerate' AND user = 'claude-user'")
    assert row["request_id"] == first and row["score"] == 0.0


def test_a_retry_after_an_error_is_not_a_regenerate(fed, ch, primary):
    gw, database = fed
    messages = [{"role": "user", "content": "retry me"}]
    primary.faults({"mode": "status", "status": 500, "count": 1})
    with pytest.raises(openai.InternalServerError):
        client(gw, KEY_A).chat.completions.create(model="gpt", messages=messages, user="retrier")
    rid = chat(gw, KEY_A, "retry me", user="retrier")["x-sluice-request-id"]
    wait_logged(ch, database, rid)
    rows = feedback_rows(ch, database, "user = 'retrier'", expect=1, timeout_s=0.5)
    assert rows == []


def test_an_abandoned_stream_is_recorded(fed, ch):
    gw, database = fed
    body = {"model": "slow", "stream": True, "user": "leaver",
            "messages": [{"role": "user", "content": "a long story please"}]}
    with httpx.Client(timeout=10) as http:
        with http.stream("POST", f"{gw.url}/v1/chat/completions", json=body,
                         headers={"authorization": f"Bearer {KEY_A}"}) as resp:
            assert resp.status_code == 200
            request_id = resp.headers["x-sluice-request-id"]
            assert next(resp.iter_lines()).startswith("data: ")
    [row] = feedback_rows(ch, database, f"request_id = '{request_id}'")
    assert (row["source"], row["kind"], row["score"], row["user"]) == ("implicit", "abandon", None, "leaver")
    assert row["public_model"] == "slow"


def test_feedback_is_published_in_openapi_and_counted_in_metrics(fed):
    gw, _ = fed
    doc = httpx.get(f"{gw.url}/openapi.json").json()
    post = doc["paths"]["/v1/feedback"]["post"]
    assert {"202", "400", "401", "404", "503"} <= set(post["responses"])
    assert doc["components"]["schemas"]["FeedbackRequest"]["properties"]["comment"]["maxLength"] == 50
    rated = chat(gw, KEY_A, "count me")["x-sluice-request-id"]
    assert post_feedback(gw, KEY_A, {"request_id": rated, "thumbs": "up", "kind": "accept"}).status_code == 202
    # a request for a model the gateway does not have: its name is the client's, not a label
    with pytest.raises(openai.NotFoundError) as missing:
        client(gw, KEY_A).chat.completions.create(model="made-up-model-1234", messages=[{"role": "user", "content": "x"}])
    request_id = missing.value.response.headers["x-sluice-request-id"]
    assert post_feedback(gw, KEY_A, {"request_id": request_id, "kind": "report"}).status_code == 202
    metrics = httpx.get(f"{gw.url}/metrics").text
    assert 'sluice_feedback_total{kind="accept",public_model="gpt",rating="positive",source="explicit"}' in metrics
    assert 'sluice_feedback_total{kind="report",public_model="other",rating="none",source="explicit"} 1.0' in metrics
    assert not [line for line in metrics.splitlines() if line.startswith("sluice_feedback") and "made-up" in line]


def test_no_feedback_endpoint_without_telemetry(primary):
    gw = start_gateway({"telemetry": {"enabled": False},
                        "providers": {"primary": {"type": "openai", "base_url": f"{primary.url}/v1"}},
                        "models": {"gpt": {"deployments": [{"provider": "primary", "model": "m1"}]}}})
    try:
        assert httpx.post(f"{gw.url}/v1/feedback", json={"request_id": "a", "score": 1}).status_code == 404
        assert "/v1/feedback" not in httpx.get(f"{gw.url}/openapi.json").json()["paths"]
    finally:
        gw.stop()


def test_regenerates_are_seen_across_replicas_sharing_redis(primary, chdb_url, ch, redis_plain):
    """Two gateways (replicas) with `feedback.implicit.redis_url`: the answer comes from one,
    the regenerate goes to the other."""
    database = f"gw_feedback_redis_{next(_db)}"
    cfg = {"telemetry": {"clickhouse_url": chdb_url, "database": database, "flush_interval_s": 0.05,
                         "writer": "thread"},
           "cache": {"enabled": False}, "keys": [{"key": KEY_A, "tenant": "team-a", "name": "a"}],
           "providers": {"primary": {"type": "openai", "base_url": f"{primary.url}/v1", "api_key": PRIMARY_KEY}},
           "models": {"gpt": {"deployments": [{"provider": "primary", "model": "m1"}]}},
           "feedback": {"implicit": {"regenerate_window_s": 30, "redis_url": redis_plain.url}}}
    one, two = start_gateway(cfg), start_gateway(cfg)
    try:
        messages = [{"role": "user", "content": f"a question for two replicas {database}"}]
        first = client(one, KEY_A).chat.completions.with_raw_response.create(
            model="gpt", messages=messages, user="roamer").headers["x-sluice-request-id"]
        client(two, KEY_A).chat.completions.create(model="gpt", messages=messages, user="roamer")
        client(two, KEY_A).chat.completions.create(model="gpt", messages=messages, user="someone-else")
        [row] = feedback_rows(ch, database, "kind = 'regenerate'")
        assert (row["request_id"], row["user"], row["score"], row["source"]) == (first, "roamer", 0.0, "implicit")
        time.sleep(0.3)
        assert len(feedback_rows(ch, database, "kind = 'regenerate'")) == 1
    finally:
        one.stop()
        two.stop()
        ch.command(f"DROP DATABASE IF EXISTS `{database}`")


def test_redis_down_loses_the_signal_not_the_answer(primary, chdb_url, ch):
    database = f"gw_feedback_noredis_{next(_db)}"
    gw = start_gateway({
        "telemetry": {"clickhouse_url": chdb_url, "database": database, "flush_interval_s": 0.05, "writer": "thread"},
        "cache": {"enabled": False},
        "providers": {"primary": {"type": "openai", "base_url": f"{primary.url}/v1", "api_key": PRIMARY_KEY}},
        "models": {"gpt": {"deployments": [{"provider": "primary", "model": "m1"}]}},
        "feedback": {"implicit": {"redis_url": "redis://127.0.0.1:1"}}})
    try:
        oai = client(gw, "any")
        for _ in range(2):
            oai.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "hello"}], user="u")
        deadline = time.monotonic() + 5
        while gw.gateway.feedback.implicit.redis_errors < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gw.gateway.feedback.implicit.redis_errors == 2
    finally:
        gw.stop()
        ch.command(f"DROP DATABASE IF EXISTS `{database}`")


def test_feedback_through_the_collector_process(primary, tmp_path):
    """The default `telemetry.writer: process`: look-ups and inserts are run by the collector
    that owns the embedded chDB (here: in a data directory of its own)."""
    from monitoring.store import CollectorTraceClient
    from telemetry.collector import socket_path_for

    data_dir = tmp_path / "data"
    gw = start_gateway({
        "data_dir": str(data_dir), "telemetry": {"flush_interval_s": 0.05}, "cache": {"enabled": False},
        "keys": [{"key": KEY_A, "tenant": "team-a", "name": "a"}, {"key": KEY_B, "tenant": "team-b", "name": "b"}],
        "providers": {"primary": {"type": "openai", "base_url": f"{primary.url}/v1", "api_key": PRIMARY_KEY}},
        "models": {"gpt": {"deployments": [{"provider": "primary", "model": "m1"}]}}})
    try:
        trace = CollectorTraceClient(socket_path_for(data_dir), timeout_s=10)
        request_id = chat(gw, KEY_A, "through the collector")["x-sluice-request-id"]
        deadline = time.monotonic() + 10
        while not trace.query("SELECT count() FROM sluice.llm_requests WHERE request_id = {r:String}",
                              parameters={"r": request_id}).result_rows[0][0]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        store = gw.gateway.feedback.store
        store.recent = RecentRequests(0)
        assert post_feedback(gw, KEY_B, {"request_id": request_id, "thumbs": "up"}).status_code == 404
        ok = post_feedback(gw, KEY_A, {"request_id": request_id, "thumbs": "down", "kind": "report",
                                       "comment": "wrong city"})
        assert ok.status_code == 202, ok.text
        deadline = time.monotonic() + 10
        query = "SELECT tenant, kind, score, comment, public_model FROM sluice.feedback"
        while not (rows := trace.query(query).result_rows):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert [tuple(r) for r in rows] == [("team-a", "report", 0.0, "wrong city", "gpt")]
        trace.close()
    finally:
        gw.stop()
