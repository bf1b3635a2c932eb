"""The other fail modes (rate limits closed, budgets open) through a Redis that dies and
comes back while requests keep coming. (test_replicas.py runs the defaults on a fleet.)"""

from __future__ import annotations

import asyncio
import time

import httpx

from tests.gateway_server import start_gateway
from tests.quota.conftest import PRICES, gateway_config
from tests.quota.fleet import hammer, metric

RATE_KEY = "outage-rate-key"
BUDGET_KEY = "outage-budget-key"
BODY = {"model": "gpt", "max_tokens": 16, "messages": [{"role": "user", "content": "hello there"}]}


def test_rate_closed_budget_open(primary, redis_server, caplog):
    cfg = gateway_config(
        primary, telemetry={"enabled": False, "prices": PRICES},
        limits={"redis_url": redis_server.url, "key_prefix": "out:", "retry_after_s": 0.3,
                "fail": {"rate": "closed", "budget": "open"}},
        keys=[{"key": RATE_KEY, "tenant": "a", "limits": {"rpm": 1_000_000}},
              {"key": BUDGET_KEY, "tenant": "b", "budget": {"usd": 1_000_000, "period": "total"}}])
    gw = start_gateway(cfg)
    timeline = {}
    try:
        async def scenario():
            async def outage():
                await asyncio.sleep(1.0)
                timeline["kill"] = time.monotonic()
                redis_server.stop()
                await asyncio.sleep(2.0)
                timeline["start"] = time.monotonic()
                await asyncio.to_thread(redis_server.start)
                timeline["up"] = time.monotonic()

            with caplog.at_level("WARNING", logger="sluice.quota"):
                rate, budget, _ = await asyncio.gather(hammer([gw.url], RATE_KEY, 4, 5.0, BODY, pause_s=0.01),
                                                       hammer([gw.url], BUDGET_KEY, 4, 5.0, BODY, pause_s=0.01),
                                                       outage())
            return rate, budget

        rate, budget = asyncio.run(scenario())
        window = (timeline["kill"] + 0.5, timeline["start"])
        during = lambda outcomes: [o for o in outcomes if o.sent > window[0] and o.done < window[1]]  # noqa: E731
        assert during(rate) and {o.status for o in during(rate)} == {503}
        assert during(budget) and {o.status for o in during(budget)} == {200}
        after = [o for o in rate + budget if o.sent > timeline["up"] + 0.8]
        assert after and {o.status for o in after} == {200}
        text = httpx.get(f"{gw.url}/metrics").text
        assert metric(text, "sluice_limits_redis_errors_total", fail="closed") >= len(during(rate))
        assert metric(text, "sluice_limits_redis_errors_total", fail="open") >= len(during(budget))
        messages = [r.getMessage() for r in caplog.records]
        assert sum("stopped answering" in m for m in messages) == 1
        assert sum("answers again;" in m for m in messages) == 1
        assert all(RATE_KEY not in m and BUDGET_KEY not in m for m in messages)
    finally:
        gw.stop()
