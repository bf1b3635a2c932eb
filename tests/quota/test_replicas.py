"""The cross-replica claims, on three real `sluice serve` processes sharing one Redis:
admitted requests stay within rpm exactly, spend stays within budget plus what is in
flight, a revoked key is refused everywhere within a second, the headers agree with what
is enforced, and a Redis that dies and comes back under load is handled by the fail modes.

Each test prints one FLEET line (run with -s): the figures docs/limits.md reports.
"""

from __future__ import annotations

import asyncio
import hashlib
import time

import httpx
import pytest

from tests.quota.conftest import MASTER_KEY, PRICES, gateway_config
from tests.quota.fleet import hammer, metric, start_fleet

REPLICAS = 3
CLIENTS = 24
RPM_KEY = "fleet-rpm-key"
BUDGET_KEY = "fleet-budget-key"
UNDER_KEY = "fleet-underestimated-key"
OPEN_KEY = "fleet-open-key"
CLOSED_KEY = "fleet-closed-key"
ADMIN = {"Authorization": f"Bearer {MASTER_KEY}"}
BODY = {"model": "gpt", "max_tokens": 16, "messages": [{"role": "user", "content": "hello there"}]}


def cfg_id(secret: str) -> str:
    return "cfg-" + hashlib.sha256(secret.encode()).hexdigest()[:16]


def cost(usage: dict) -> float:
    return usage["prompt_tokens"] * PRICES["m1"]["input"] / 1e6 + \
        usage["completion_tokens"] * PRICES["m1"]["output"] / 1e6


@pytest.fixture(scope="module")
def fleet(primary, redis_server, tmp_path_factory):
    cfg = gateway_config(
        primary, admin=True, telemetry={"enabled": False, "prices": PRICES},
        limits={"redis_url": redis_server.url, "key_prefix": "fleet:", "default_max_tokens": 4,
                "retry_after_s": 0.5},
        keys=[{"key": RPM_KEY, "tenant": "rpm-team", "limits": {"rpm": 30}},
              {"key": BUDGET_KEY, "tenant": "budget-team", "budget": {"usd": 1.0, "period": "day"}},
              {"key": UNDER_KEY, "tenant": "under-team", "budget": {"usd": 1.0, "period": "day"}},
              {"key": OPEN_KEY, "tenant": "outage", "limits": {"rpm": 1_000_000}},
              {"key": CLOSED_KEY, "tenant": "outage", "budget": {"usd": 1_000_000, "period": "month"}}])
    fleet = start_fleet(cfg, REPLICAS, tmp_path_factory.mktemp("fleet"))
    yield fleet
    fleet.stop()


def test_rpm_holds_exactly_across_replicas_and_the_headers_agree(fleet):
    out = asyncio.run(hammer(fleet.urls, RPM_KEY, CLIENTS, 4.0, BODY))
    admitted = [o for o in out if o.status == 200]
    refused = [o for o in out if o.status == 429]
    assert len(admitted) + len(refused) == len(out)
    print(f"\nFLEET rpm: replicas={REPLICAS} clients={CLIENTS} limit=30/min answers={len(out)} "
          f"admitted={len(admitted)} per replica={[sum(o.replica == r for o in admitted) for r in range(REPLICAS)]}")
    assert len(admitted) == 30                                  # all within one minute: exactly the limit
    # the count is shared: admissions came through more than one replica, and every replica
    # refused once the shared count was full (which replica wins the first slots is a race)
    assert len({o.replica for o in admitted}) >= 2
    assert len({o.replica for o in refused}) == REPLICAS
    # every admission took one slot of the shared count: remaining 29, 28, ..., 0, each once
    remaining = sorted(int(o.headers["x-ratelimit-remaining-requests"]) for o in admitted)
    assert remaining == list(range(30))
    for o in refused:
        assert o.headers["x-ratelimit-remaining-requests"] == "0"
        assert o.headers["x-ratelimit-limit-requests"] == "30"
        assert 1 <= int(o.headers["retry-after"]) <= 61
        assert o.body["error"]["code"] == "rate_limit_exceeded"
    # Retry-After is when the first admission leaves the window: the refusals right after
    # the 30th admission say about 60 s less the time since the first one
    first = min(o.sent for o in admitted)
    last = max(o.done for o in admitted)
    late = [o for o in refused if o.sent > last]
    assert late and all(abs(int(o.headers["retry-after-ms"]) / 1000 - (60 - (o.done - first))) < 2.0 for o in late)


def test_budget_is_never_exceeded_by_more_than_what_is_in_flight(fleet):
    body_no_cap = {k: v for k, v in BODY.items() if k != "max_tokens"}   # estimate 4 output tokens, uses 16
    lines = []
    for key, body, honest in ((BUDGET_KEY, BODY, True), (UNDER_KEY, body_no_cap, False)):
        out = asyncio.run(hammer(fleet.urls, key, CLIENTS, 30.0, body, stop_after=400))
        admitted = [o for o in out if o.status == 200]
        refused = [o for o in out if o.status == 429]
        assert refused and all(o.body["error"]["code"] == "insufficient_quota" for o in refused)
        state = settled_state(fleet.urls[0], cfg_id(key))        # the last settlements have landed
        spend = state["spend_usd"]
        paid = sum(cost(o.body["usage"]) for o in admitted)      # what the provider's usage says
        assert state["reserved_usd"] == 0 and state["usage"]["in_flight"] == 0
        assert spend == pytest.approx(paid, abs=1e-6)
        per_request = max(cost(o.body["usage"]) for o in admitted)
        overshoot = max(0.0, spend - 1.0)
        lines.append(f"FLEET budget ({'estimate >= actual' if honest else 'estimate < actual'}): "
                     f"replicas={REPLICAS} clients={CLIENTS} budget=$1.00 admitted={len(admitted)} "
                     f"spend=${spend:.4f} overshoot=${overshoot:.4f} (bound: {CLIENTS} in flight x "
                     f"${per_request:.4f} = ${CLIENTS * per_request:.4f})")
        if honest:
            assert spend <= 1.0                                  # reservations covered every request
        else:
            assert spend <= 1.0 + CLIENTS * per_request          # only requests in flight can overshoot
    print("\n" + "\n".join(lines))


def settled_state(url: str, key_id: str, timeout_s: float = 10.0) -> dict:
    """The key's state once nothing is reserved or in flight any more: settlements leave
    every few ms, but a loaded machine may take longer than any fixed sleep."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = httpx.get(f"{url}/admin/keys/{key_id}", headers=ADMIN).json()
        if (state["reserved_usd"] == 0 and state["usage"]["in_flight"] == 0) or time.monotonic() > deadline:
            return state
        time.sleep(0.05)


def test_a_revoked_key_is_refused_by_every_replica_within_a_second(fleet):
    created = httpx.post(f"{fleet.urls[0]}/admin/keys", headers=ADMIN, json={"tenant": "rev", "name": "soon"}).json()
    secret = {"Authorization": f"Bearer {created['key']}"}
    for url in fleet.urls:                                       # every replica has it cached
        assert httpx.post(f"{url}/v1/chat/completions", json=BODY, headers=secret).status_code == 200
    revoked_at = time.monotonic()
    assert httpx.delete(f"{fleet.urls[1]}/admin/keys/{created['id']}", headers=ADMIN).status_code == 200
    delays = {}
    with httpx.Client() as http:
        while len(delays) < REPLICAS and time.monotonic() - revoked_at < 5:
            for i, url in enumerate(fleet.urls):
                if i not in delays and http.post(f"{url}/v1/chat/completions", json=BODY,
                                                 headers=secret).status_code == 401:
                    delays[i] = time.monotonic() - revoked_at
            time.sleep(0.02)
    print(f"\nFLEET revocation: refused by replica after {', '.join(f'{d * 1000:.0f} ms' for d in delays.values())}")
    assert len(delays) == REPLICAS and max(delays.values()) < 1.0


def test_redis_killed_and_restarted_under_load(fleet, redis_server):
    """Defaults: rate limits fail open, budgets fail closed; logged once per outage."""
    timeline = {}

    async def scenario():
        async def outage():
            await asyncio.sleep(1.5)
            timeline["kill"] = time.monotonic()
            redis_server.stop()
            await asyncio.sleep(2.5)
            timeline["start"] = time.monotonic()
            await asyncio.to_thread(redis_server.start)
            timeline["up"] = time.monotonic()

        results = await asyncio.gather(hammer(fleet.urls, OPEN_KEY, 6, 7.0, BODY, pause_s=0.01),
                                       hammer(fleet.urls, CLOSED_KEY, 6, 7.0, BODY, pause_s=0.01), outage())
        return results[0], results[1]

    opened, closed = asyncio.run(scenario())
    kill, up = timeline["kill"], timeline["up"]
    down = [o for o in opened + closed if o.sent > kill + 0.5 and o.done < timeline["start"]]
    assert {o.status for o in down if o in opened} == {200}               # fail open
    assert {o.status for o in down if o in closed} == {503}               # fail closed
    assert all(o.body["error"]["code"] == "limits_unavailable" for o in down if o in closed)
    after = [o for o in opened + closed if o.sent > up + 1.0]
    assert after and {o.status for o in after} == {200}                   # back by itself
    print(f"\nFLEET outage: {len(down)} answers while Redis was down ({sum(o in opened for o in down)} admitted "
          f"open, {sum(o in closed for o in down)} refused closed), {len(after)} after it came back, all 200")
    for i, url in enumerate(fleet.urls):
        text = httpx.get(f"{url}/metrics").text
        assert metric(text, "sluice_limits_redis_errors_total", fail="open") > 0
        assert metric(text, "sluice_limits_redis_errors_total", fail="closed") > 0
        assert metric(text, "sluice_limits_redis_up") == 1.0
        log = fleet.log(i)
        assert log.count("stopped answering") == 1, log[-2000:]
        assert log.count("answers again; limits") == 1
