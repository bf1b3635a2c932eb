"""Limits through a running gateway: what callers see (headers, 429s in both wire formats,
budgets), settlement of streams, the admin API and virtual keys, the `limited` column and
the audit trail in ClickHouse, /metrics and the report. Real Redis, real SDKs."""

from __future__ import annotations

import hashlib
import time

import anthropic
import httpx
import openai
import pytest

from tests.conftest import PRIMARY_KEY
from tests.gateway_server import start_gateway
from tests.mock_server import start_mock
from tests.quota.conftest import MASTER_KEY, PRICES, gateway_config

KEY_A = "sluice-limits-key-a"
KEY_B = "sluice-limits-key-b"
ADMIN = {"Authorization": f"Bearer {MASTER_KEY}"}


def cfg_id(secret: str) -> str:
    return "cfg-" + hashlib.sha256(secret.encode()).hexdigest()[:16]


def chat(client: openai.OpenAI, content: str = "hello there", **kw):
    return client.chat.completions.with_raw_response.create(
        model="gpt", max_tokens=16, messages=[{"role": "user", "content": content}], **kw)


@pytest.fixture(scope="module")
def paced():
    """A mock that streams 16 tokens at 40 tokens/s: a stream a client can leave half-way."""
    url, stop = start_mock(api_key=PRIMARY_KEY, tokens_per_second=40)
    yield url
    stop()


@pytest.fixture(scope="module")
def limited(primary, redis_server, chdb_url, ch):
    """Config keys with limits, tenant limits, the admin API, telemetry rows in chDB."""
    database = "quota_gateway"
    cfg = gateway_config(
        primary,
        limits={"redis_url": redis_server.url, "key_prefix": "gw1:", "key_cache_s": 0.3,
                "tenants": {"team-b": {"limits": {"rpm": 1000}, "budget": {"usd": 0.1, "period": "day"}}}},
        keys=[{"key": KEY_A, "tenant": "team-a", "name": "key-a", "limits": {"rpm": 3, "tpm": 100000}},
              {"key": KEY_B, "tenant": "team-b", "name": "key-b", "limits": {"rpm": 1000, "max_parallel": 8}}],
        admin=True,
        telemetry={"clickhouse_url": chdb_url, "database": database, "flush_interval_s": 0.05, "writer": "thread",
                   "prices": PRICES},
    )
    gw = start_gateway(cfg)
    yield gw, database
    gw.stop()
    ch.command(f"DROP DATABASE IF EXISTS `{database}`")


def test_openai_headers_count_down_and_the_429_says_when(limited):
    gw, _ = limited
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=KEY_A, max_retries=0)
    seen = []
    for _ in range(3):
        raw = chat(client)
        h = raw.headers
        seen.append((h["x-ratelimit-limit-requests"], h["x-ratelimit-remaining-requests"]))
        assert h["x-ratelimit-limit-tokens"] == "100000"
        assert h["x-ratelimit-reset-requests"].endswith("s")
    assert seen == [("3", "2"), ("3", "1"), ("3", "0")]
    with pytest.raises(openai.RateLimitError) as caught:
        chat(client)
    err = caught.value
    assert err.status_code == 429 and err.code == "rate_limit_exceeded"
    assert "key 'key-a'" in err.message and "3 requests per minute" in err.message
    h = err.response.headers
    assert h["x-ratelimit-remaining-requests"] == "0"
    assert 1 <= int(h["retry-after"]) <= 61 and 0 < int(h["retry-after-ms"]) <= 61_000
    assert KEY_A not in err.response.text


def test_anthropic_callers_get_anthropic_errors_and_headers(limited):
    gw, _ = limited
    client = anthropic.Anthropic(base_url=gw.url, api_key=KEY_A, max_retries=0)
    with pytest.raises(anthropic.RateLimitError) as caught:     # key-a used its 3 requests above
        client.messages.create(model="gpt", max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    body = caught.value.response.json()
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    h = caught.value.response.headers
    assert h["anthropic-ratelimit-requests-limit"] == "3"
    assert h["anthropic-ratelimit-requests-remaining"] == "0"
    assert h["anthropic-ratelimit-requests-reset"].endswith("Z")
    assert "x-ratelimit-limit-requests" not in h and int(h["retry-after"]) >= 1


def settled(url: str, path: str, timeout_s: float = 10.0) -> None:
    """Until nothing is reserved: settlements leave every few ms, later on a loaded machine."""
    deadline = time.monotonic() + timeout_s
    while httpx.get(f"{url}{path}", headers=ADMIN).json()["reserved_usd"] and time.monotonic() < deadline:
        time.sleep(0.02)


def test_budget_refusal_is_insufficient_quota_naming_the_budget_and_its_reset(limited):
    gw, _ = limited
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=KEY_B, max_retries=0)
    admitted = 0
    with pytest.raises(openai.RateLimitError) as caught:
        for _ in range(10):
            chat(client)
            admitted += 1
            settled(gw.url, "/admin/tenants/team-b")                # before the next
    assert admitted == 2                                             # ~$0.036 each against $0.10
    err = caught.value
    assert err.code == "insufficient_quota"
    assert "tenant 'team-b'" in err.message and "$0.10 per day" in err.message and "resets at" in err.message
    assert err.response.headers["x-should-retry"] == "false"
    tenant = httpx.get(f"{gw.url}/admin/tenants/team-b", headers=ADMIN).json()
    assert tenant["source"] == "config"
    assert 0.06 < tenant["spend_usd"] <= 0.1 and tenant["reserved_usd"] == 0
    assert tenant["period_start"].endswith("T00:00:00Z")


def test_streams_settle_to_their_usage(limited):
    gw, _ = limited
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=KEY_B, max_retries=0)
    before = httpx.get(f"{gw.url}/admin/keys/{cfg_id(KEY_B)}", headers=ADMIN).json()["usage"]
    # team-b's budget is spent: streams are refused as well, and count nothing
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt", max_tokens=16, stream=True,
                                       messages=[{"role": "user", "content": "x"}])
    after = httpx.get(f"{gw.url}/admin/keys/{cfg_id(KEY_B)}", headers=ADMIN).json()["usage"]
    assert after["requests"] == before["requests"] and after["in_flight"] == 0


def test_admin_api_needs_the_master_key(limited):
    gw, _ = limited
    assert httpx.get(f"{gw.url}/admin/keys").status_code == 401
    assert httpx.get(f"{gw.url}/admin/keys", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(f"{gw.url}/admin/keys", headers={"x-api-key": KEY_A}).status_code == 401
    assert httpx.get(f"{gw.url}/admin/keys", headers={"x-api-key": MASTER_KEY}).status_code == 200


def test_virtual_keys_lifecycle(limited):
    gw, _ = limited
    created = httpx.post(f"{gw.url}/admin/keys", headers=ADMIN, json={
        "tenant": "team-v", "name": "ci", "models": ["gpt"], "limits": {"rpm": 100, "tpm": 50000, "max_parallel": 4},
        "budget": {"usd": 5, "period": "month"}, "metadata": {"owner": "ci"}})
    assert created.status_code == 201, created.text
    key_id, secret = created.json()["id"], created.json()["key"]
    assert secret.startswith("sk-sluice-")
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=secret, max_retries=0)
    raw = chat(client)
    assert raw.headers["x-ratelimit-limit-requests"] == "100"
    listed = httpx.get(f"{gw.url}/admin/keys", headers=ADMIN)
    assert secret not in listed.text and any(k["id"] == key_id for k in listed.json()["data"])
    assert {k["source"] for k in listed.json()["data"]} == {"config", "api"}
    one = httpx.get(f"{gw.url}/admin/keys/{key_id}", headers=ADMIN).json()
    assert one["usage"]["requests"] == 1 and one["usage"]["in_flight"] == 0
    assert one["spend_usd"] > 0 and one["period_start"].endswith("-01T00:00:00Z")
    assert one["budget"] == {"usd": 5.0, "period": "month"} and secret not in str(one)

    patched = httpx.patch(f"{gw.url}/admin/keys/{key_id}", headers=ADMIN, json={"limits": {"rpm": 1}})
    assert patched.json()["limits"] == {"rpm": 1, "tpm": 50000, "max_parallel": 4}
    time.sleep(0.4)                                         # key_cache_s
    with pytest.raises(openai.RateLimitError):
        chat(client)                                        # 1 request this window already

    rotated = httpx.post(f"{gw.url}/admin/keys/{key_id}/rotate", headers=ADMIN).json()
    time.sleep(0.4)
    with pytest.raises(openai.AuthenticationError, match="revoked"):
        chat(client)
    new_client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=rotated["key"], max_retries=0)
    with pytest.raises(openai.RateLimitError):              # same key id: same counters
        chat(new_client)

    assert httpx.delete(f"{gw.url}/admin/keys/{key_id}", headers=ADMIN).json()["status"] == "revoked"
    time.sleep(0.4)
    with pytest.raises(openai.AuthenticationError, match="revoked"):
        chat(new_client)
    assert httpx.patch(f"{gw.url}/admin/keys/{cfg_id(KEY_A)}", headers=ADMIN, json={"name": "x"}).status_code == 409
    bad = httpx.post(f"{gw.url}/admin/keys", headers=ADMIN, json={"tenant": "t", "models": ["nope"]})
    assert bad.status_code == 400 and "nope" in bad.json()["error"]["message"]
    bad = httpx.post(f"{gw.url}/admin/keys", headers=ADMIN, json={"tenant": "t", "budget": {"usd": -1}})
    assert bad.status_code == 400 and "budget.usd" in bad.json()["error"]["message"]


def test_expired_and_unknown_keys_are_refused_and_anonymous_callers_too(limited):
    gw, _ = limited
    created = httpx.post(f"{gw.url}/admin/keys", headers=ADMIN, json={
        "tenant": "team-v", "expires_at": time.time() + 1}).json()
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=created["key"], max_retries=0)
    chat(client)
    time.sleep(1.1)
    with pytest.raises(openai.AuthenticationError, match="expired"):
        chat(client)
    for key in ("sk-sluice-not-a-key", "anything"):
        with pytest.raises(openai.AuthenticationError, match="Invalid API key"):
            chat(openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key, max_retries=0))
    assert httpx.post(f"{gw.url}/v1/chat/completions", json={"model": "gpt", "messages": []}).status_code == 401


def test_tenant_limits_set_through_the_api(limited):
    gw, _ = limited
    put = httpx.put(f"{gw.url}/admin/tenants/team-a", headers=ADMIN, json={"limits": {"tpm": 5}})
    assert put.status_code == 200 and put.json()["source"] == "api" and put.json()["limits"]["tpm"] == 5
    time.sleep(0.4)
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=KEY_A, max_retries=0)
    with pytest.raises(openai.RateLimitError) as caught:
        chat(client)
    assert "tenant 'team-a'" in caught.value.message or "key 'key-a'" in caught.value.message
    names = [t["name"] for t in httpx.get(f"{gw.url}/admin/tenants", headers=ADMIN).json()["data"]]
    assert {"team-a", "team-b"} <= set(names)
    gone = httpx.delete(f"{gw.url}/admin/tenants/team-a", headers=ADMIN).json()
    assert gone["deleted"] and gone["source"] == "none"


def test_limited_column_audit_rows_metrics_and_report(limited, ch):
    gw, database = limited
    assert gw.gateway.telemetry.flush(timeout_s=10)
    rows = ch.query(f"SELECT key_id, limited, status_code FROM `{database}`.llm_requests "
                    f"WHERE limited != ''").result_rows
    assert {(k, lim) for k, lim, _ in rows} >= {("key-a", "rate"), ("key-b", "budget")}
    assert all(status == 429 for _, _, status in rows)
    for _ in range(50):                                 # the audit rows go through a background task
        audit = ch.query(f"SELECT actor, action, target_id, status, detail FROM `{database}`.admin_audit").result_rows
        if any(a == "key.revoke" for _, a, _, _, _ in audit):
            break
        time.sleep(0.1)
    actions = {a for _, a, _, _, _ in audit}
    assert {"key.create", "key.update", "key.rotate", "key.revoke", "tenant.set", "key.list"} <= actions
    assert ("unauthenticated", "key.list", "", 401) in {(r[0], r[1], r[2], r[3]) for r in audit}
    stored = repr(audit) + repr(ch.query(f"SELECT * FROM `{database}`.llm_requests").result_rows)
    assert "sk-sluice-" not in stored and MASTER_KEY not in stored and KEY_A not in stored

    metrics = httpx.get(f"{gw.url}/metrics").text
    assert 'sluice_limit_decisions_total{decision="rate",scope="key"}' in metrics
    assert 'sluice_budget_remaining_usd{period="day",scope="tenant",subject="team-b"}' in metrics
    assert 'sluice_limits_redis_up 1.0' in metrics
    assert "sk-sluice-" not in metrics and KEY_A not in metrics

    budgeted = httpx.post(f"{gw.url}/admin/keys", headers=ADMIN, json={
        "tenant": "team-r", "name": "reported", "budget": {"usd": 2, "period": "day"}}).json()
    chat(openai.OpenAI(base_url=f"{gw.url}/v1", api_key=budgeted["key"], max_retries=0))
    assert gw.gateway.telemetry.flush(timeout_s=10)
    report = httpx.get(f"{gw.url}/sluice/report", params={"by": "key", "since": "1h"}).text
    table, budgets = report.split("Budgets now")
    assert "key-a" in table and "limited" in table
    line = next(x for x in budgets.splitlines() if x.startswith(budgeted["id"]))
    assert line.split()[1:4] == ["team-r", "day", "2.00"]
    tenants = httpx.get(f"{gw.url}/sluice/report", params={"by": "tenant", "since": "1h"}).text
    assert "team-b" in tenants.split("Budgets now")[1]


def test_cut_and_abandoned_streams_settle_to_what_was_relayed(primary, paced, redis_server):
    cfg = gateway_config(primary, limits={"redis_url": redis_server.url, "key_prefix": "gw2:"},
                         keys=[{"key": KEY_A, "tenant": "s", "limits": {"tpm": 100000, "max_parallel": 2}}],
                         admin=True)
    cfg["providers"]["paced"] = {"type": "openai", "base_url": f"{paced}/v1", "api_key": PRIMARY_KEY}
    cfg["models"]["slow"] = {"deployments": [{"provider": "paced", "model": "m1"}]}
    gw = start_gateway(cfg)
    try:
        client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=KEY_A, max_retries=0)

        def usage() -> dict:
            return httpx.get(f"{gw.url}/admin/keys/{cfg_id(KEY_A)}", headers=ADMIN).json()["usage"]

        # a complete stream: the provider's usage replaces the estimate (16 + 1024 max_tokens reserved)
        chunks = list(client.chat.completions.create(model="gpt", stream=True, max_tokens=1024,
                                                     stream_options={"include_usage": True},
                                                     messages=[{"role": "user", "content": "count"}]))
        reported = chunks[-1].usage.total_tokens
        time.sleep(0.1)
        assert usage()["tokens"] == reported and usage()["in_flight"] == 0

        # the provider cuts the stream: what was relayed, never the 1,024 reserved
        with pytest.raises(openai.APIError):
            list(client.chat.completions.create(model="cut", stream=True, max_tokens=1024,
                                                messages=[{"role": "user", "content": "count"}]))
        time.sleep(0.1)
        cut = usage()
        assert reported < cut["tokens"] < reported + 100 and cut["in_flight"] == 0

        # the caller leaves after two chunks of a paced stream
        with httpx.stream("POST", f"{gw.url}/v1/chat/completions", headers={"Authorization": f"Bearer {KEY_A}"},
                          json={"model": "slow", "stream": True, "max_tokens": 1024,
                                "messages": [{"role": "user", "content": "count"}]}) as resp:
            lines = resp.iter_lines()
            got = [next(lines) for _ in range(3)]
        assert any(line.startswith("data:") for line in got)
        time.sleep(0.3)
        left = usage()
        assert left["in_flight"] == 0 and cut["tokens"] < left["tokens"] < cut["tokens"] + 100
    finally:
        gw.stop()


def test_without_redis_the_same_limits_hold_in_process(primary, caplog):
    cfg = gateway_config(primary, keys=[{"key": KEY_A, "tenant": "solo", "limits": {"rpm": 2}}])
    with caplog.at_level("WARNING", logger="sluice.quota"):
        gw = start_gateway(cfg)
    try:
        assert any("in this process only" in r.getMessage() for r in caplog.records)
        client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=KEY_A, max_retries=0)
        assert chat(client).headers["x-ratelimit-remaining-requests"] == "1"
        chat(client)
        with pytest.raises(openai.RateLimitError):
            chat(client)
    finally:
        gw.stop()


def test_sluice_keys_cli(limited, capsys, monkeypatch):
    from gateway.cli import main
    gw, _ = limited
    monkeypatch.setenv("SLUICE_MASTER_KEY", MASTER_KEY)
    assert main(["keys", "--gateway", gw.url, "create", "--tenant", "team-cli", "--name", "from-cli",
                 "--rpm", "7", "--budget-usd", "3", "--budget-period", "day"]) == 0
    out = capsys.readouterr().out
    fields = dict(line.split(":", 1) for line in out.splitlines())
    key_id, secret = fields["id"].strip(), fields["key"].strip()
    assert secret.startswith("sk-sluice-")
    chat(openai.OpenAI(base_url=f"{gw.url}/v1", api_key=secret, max_retries=0))
    assert main(["keys", "--gateway", gw.url, "list"]) == 0
    listed = capsys.readouterr().out
    assert key_id in listed and "$3/day" in listed and secret not in listed
    assert main(["keys", "--gateway", gw.url, "revoke", key_id]) == 0
    assert "revoked" in capsys.readouterr().out
    monkeypatch.setenv("SLUICE_MASTER_KEY", "wrong-master-key-0000")
    assert main(["keys", "--gateway", gw.url, "list"]) == 1
    assert "401" in capsys.readouterr().err


def test_an_open_gateway_closes_once_a_virtual_key_exists(primary, redis_server):
    cfg = gateway_config(primary, limits={"redis_url": redis_server.url, "key_prefix": "gw3:"}, admin=True)
    gw = start_gateway(cfg)
    try:
        anonymous = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="anything", max_retries=0)
        chat(anonymous)                                          # no keys anywhere: open
        created = httpx.post(f"{gw.url}/admin/keys", headers=ADMIN, json={"tenant": "first"}).json()
        with pytest.raises(openai.AuthenticationError):
            chat(anonymous)
        chat(openai.OpenAI(base_url=f"{gw.url}/v1", api_key=created["key"], max_retries=0))
        httpx.delete(f"{gw.url}/admin/keys/{created['id']}", headers=ADMIN)
        time.sleep(0.6)
        with pytest.raises(openai.AuthenticationError):         # revoking the last key does not reopen it
            chat(anonymous)
        models = httpx.get(f"{gw.url}/v1/models", headers={"Authorization": "Bearer anything"})
        assert models.status_code == 401
    finally:
        gw.stop()
