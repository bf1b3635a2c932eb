"""The gateway's own dependencies failing under traffic: Redis (the cache) killed and
restarted empty on the same port, and the telemetry collector process SIGKILLed. Every
tenant is "another tenant" here: none of them may notice more than a cache miss."""

from __future__ import annotations

import os
import signal
import time

from tests.faults.conftest import (
    A_FALLBACK,
    Background,
    FaultRow,
    Suite,
    check_others,
    summary,
    unique_prompt,
    unique_tag,
    wait_until,
)

# A semantic pair (the cache suite's): the paraphrase must hit the question's entry.
QUESTION = "How do I reset my password on the staff portal?"
PARAPHRASE = "How can I reset my password on the staff portal?"


def test_redis_killed_and_restarted(suite: Suite, fault_row: FaultRow) -> None:
    fg, redis = suite.fg, suite.fg.redis
    assert redis is not None
    fault_row.fault = "Redis (cache) killed, restarted empty on the same port"
    question = f"{QUESTION} (run {unique_tag()})"             # a fresh entry in this Redis
    assert fg.call("team-b", "b-chat", question).cache == "miss"
    assert wait_until(lambda: fg.call("team-b", "b-chat", question).cache == "hit", 5)   # stored after the answer
    cache_errors_before = fg.metric("sluice_cache_requests_total", status="error")
    with Background(fg) as others:
        time.sleep(0.3)
        redis.stop()                                           # SIGKILL by PID
        during = fg.concurrently([lambda s=s: fg.call("team-a", A_FALLBACK, unique_prompt("redis"), stream=s)
                                  for s in (False, True)] * 4)
        during.append(fg.call("team-b", "b-chat", question))   # its entry is out of reach now
        time.sleep(0.5)
        redis.start()                                          # same port, empty, no index
        started = time.monotonic()

        def cache_back() -> bool:
            fresh = f"{QUESTION} (after {unique_tag()})"
            first = fg.call("team-b", "b-chat", fresh)
            if first.cache != "miss":
                return False
            return wait_until(lambda: fg.call("team-b", "b-chat", fresh).cache == "hit", 3) and \
                fg.call("team-b", "b-chat", fresh.replace("How do I", "How can I")).cache == "semantic-hit"

        back = wait_until(cache_back, timeout_s=15, every_s=0.3)
        fault_row.recovered = (f"yes: exact hit and semantic hit again {time.monotonic() - started:.1f} s after "
                               "Redis came back (index re-created)" if back else "NO: the cache did not come back")
    cache_errors = fg.metric("sluice_cache_requests_total", status="error") - cache_errors_before
    fault_row.client = f"{summary(during)}; cache status during the outage: " \
                       f"{sorted({o.cache for o in during})}, {cache_errors:g} cache errors counted"
    fault_row.others = check_others(others.outcomes, suite.baseline)
    fault_row.accounting = fg.accounted()

    for o in during:
        assert (o.status, o.ended) == (200, "complete"), o
        assert o.cache not in ("hit", "semantic-hit"), o       # nothing can come from a dead Redis
    assert cache_errors > 0                                    # the outage is counted in /metrics
    assert back, "the cache did not come back after Redis restarted"


def test_collector_sigkilled(suite: Suite, fault_row: FaultRow) -> None:
    fg = suite.fg
    fault_row.fault = "telemetry collector SIGKILLed"
    client = fg.gateway.telemetry.client
    owner = client.owner
    assert owner is not None and owner.alive
    old_pid, restarts = owner._process.pid, owner.restarts
    with Background(fg) as others:
        time.sleep(0.5)
        os.kill(old_pid, signal.SIGKILL)
        during = fg.concurrently([lambda s=s: fg.call("team-a", A_FALLBACK, unique_prompt("kill"), stream=s)
                                  for s in (False, True)] * 6)
        restarted = wait_until(lambda: owner.restarts > restarts and owner.alive, timeout_s=30, every_s=0.2)
        time.sleep(0.5)
    fault_row.client = f"{summary(during)} (serving never waited on telemetry)"
    fault_row.others = check_others(others.outcomes, suite.baseline)
    assert restarted, "the collector was not restarted"
    fault_row.accounting = fg.accounted()
    # Recovered: the new collector writes new requests' rows.
    rows_before = fg.rows()
    assert rows_before is not None
    for _ in range(5):
        fg.call("team-a", A_FALLBACK, unique_prompt("after kill"))
    assert wait_until(lambda: (fg.rows() or 0) >= rows_before + 5, timeout_s=20, every_s=0.3)
    fault_row.recovered = f"yes: collector restarted (pid {old_pid} -> {owner._process.pid}), new rows written"
    for o in during:
        assert (o.status, o.ended) == (200, "complete"), o
