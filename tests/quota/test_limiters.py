"""The reserve / settle / peek rules, on both limiters: Redis (the Lua scripts, on a real
Redis) and in-process. Same inputs, same answers."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.quota.local_limiter import LocalLimiter
from gateway.quota.model import (
    BUDGET,
    CONCURRENCY,
    NANO,
    REQUESTS,
    TOKENS,
    TOO_LARGE,
    Estimate,
    QuotaSpec,
    Reservation,
    Subject,
    SubjectSet,
    period_bounds,
)
from gateway.quota.redis_limiter import RedisLimiter
from gateway.quota.resp import RespClient, encode


@pytest.fixture(params=["redis", "local"])
async def make(request, redis_server, prefix):
    built = []

    async def make_limiter(window_s: float = 60.0, lease_s: float = 900.0):
        if request.param == "redis":
            lim = RedisLimiter(redis_server.url, "test", prefix=prefix, window_s=window_s, lease_s=lease_s,
                               timeout_s=0.5, retry_after_s=0.2, settle_interval_s=0.002)
        else:
            lim = LocalLimiter(window_s=window_s, lease_s=lease_s)
        await lim.start()
        built.append(lim)
        return lim

    yield make_limiter
    for lim in built:
        await lim.aclose()


def subjects(key: QuotaSpec | None = None, tenant: QuotaSpec | None = None, ident: str = "k1") -> SubjectSet:
    out = []
    if key is not None:
        out.append(Subject("key", ident, "team", ident, key))
    if tenant is not None:
        out.append(Subject("tenant", "team", "team", "team", tenant))
    return SubjectSet(tuple(out))


EST = Estimate(prompt_tokens=10, output_tokens=20, nano_usd=1000)


async def admit_all(lim, ss, n, est=EST, prefix="r"):
    return [await lim.reserve(ss, f"{prefix}{i}", est) for i in range(n)]


async def test_rpm_is_exact_and_reset_says_when_the_next_one_passes(make):
    lim = await make(window_s=1.0)
    ss = subjects(QuotaSpec(rpm=3))
    first = await admit_all(lim, ss, 4)
    assert [d.admitted for d in first] == [True, True, True, False]
    refused = first[3]
    assert refused.kind == REQUESTS and refused.subject == 0
    assert [d.states[0].requests for d in first[:3]] == [1, 2, 3]
    assert 0 < refused.retry_ms <= 1000
    await asyncio.sleep(refused.retry_ms / 1000 + 0.02)
    again = await lim.reserve(ss, "later", EST)
    assert again.admitted                     # the oldest left the window when `retry` said


async def test_both_subjects_must_admit_and_a_refusal_reserves_nothing(make):
    lim = await make()
    ss = subjects(QuotaSpec(rpm=10), QuotaSpec(rpm=2))
    d = await admit_all(lim, ss, 3)
    assert [x.admitted for x in d] == [True, True, False]
    assert d[2].kind == REQUESTS and d[2].subject == 1          # the tenant refused
    assert d[2].states[0].requests == 2                           # the key did not count it
    other_key = subjects(QuotaSpec(rpm=10), QuotaSpec(rpm=2), ident="k2")
    assert not (await lim.reserve(other_key, "x", EST)).admitted  # the tenant is shared by its keys


async def test_tpm_reserves_the_estimate_and_settles_to_actual(make):
    lim = await make()
    ss = subjects(QuotaSpec(tpm=100))
    est = Estimate(10, 30, 0)                                     # 40 tokens
    a, b, c = await admit_all(lim, ss, 3, est)
    assert (a.admitted, b.admitted, c.admitted) == (True, True, False)
    assert c.kind == TOKENS and c.states[0].tokens == 80 and c.retry_ms > 0
    # the first request used 5 tokens, not 40: room for one more
    lim.settle(Reservation(ss, "r0", a.now_ms, est), tokens=5, nano_usd=0)
    await asyncio.sleep(0.05)
    d = await lim.reserve(ss, "r3", est)
    assert d.admitted and d.states[0].tokens == 85
    big = await lim.reserve(ss, "big", Estimate(10, 200, 0))
    assert big.kind == TOO_LARGE


async def test_concurrency_counts_until_settled(make):
    lim = await make()
    ss = subjects(QuotaSpec(max_parallel=2))
    a, b, c = await admit_all(lim, ss, 3)
    assert (a.admitted, b.admitted, c.kind) == (True, True, CONCURRENCY)
    lim.settle(Reservation(ss, "r0", a.now_ms, EST), 30, 0)
    await asyncio.sleep(0.05)
    assert (await lim.reserve(ss, "r9", EST)).admitted


async def test_budget_reserves_estimates_settles_actuals_and_never_overshoots(make):
    lim = await make()
    spec = QuotaSpec(budget_usd=10 / NANO * 1000, period="day")   # 10,000 nano
    ss = subjects(spec)
    est = Estimate(1, 1, 3000)
    d = await admit_all(lim, ss, 4, est)
    assert [x.admitted for x in d] == [True, True, True, False]   # 3 x 3000 reserved; a 4th would pass 10,000
    assert d[3].kind == BUDGET and d[3].states[0].reserved_nano == 9000
    assert d[3].retry_ms == pytest.approx(period_bounds("day")[2] * 1000 - d[3].now_ms, abs=2000)
    for i, x in enumerate(d[:3]):
        lim.settle(Reservation(ss, f"r{i}", x.now_ms, est), 2, 1000)   # each cost 1,000
    await asyncio.sleep(0.05)
    _, (state,) = await lim.peek(ss)
    assert (state.spent_nano, state.reserved_nano, state.in_flight) == (3000, 0, 0)
    more = await admit_all(lim, ss, 5, est, prefix="s")
    assert [x.admitted for x in more] == [True, True, False, False, False]   # 3000 + 2 x 3000 <= 10,000


async def test_a_lease_that_runs_out_counts_its_reservation_as_spent(make):
    lim = await make(lease_s=0.2)
    ss = subjects(QuotaSpec(max_parallel=1, budget_usd=1.0, period="total"))
    est = Estimate(1, 1, 5000)
    first = await lim.reserve(ss, "lost", est)                     # never settled: its replica "died"
    assert first.admitted
    assert (await lim.reserve(ss, "blocked", est)).kind == CONCURRENCY
    await asyncio.sleep(0.3)
    after = await lim.reserve(ss, "next", est)
    assert after.admitted                                         # its max_parallel slot is free
    state = after.states[0]
    assert state.spent_nano + state.reserved_nano == 10_000       # its reservation still counts
    await asyncio.sleep(1.0)                                      # leases are looked at once a second
    later = await lim.reserve(ss, "later", est)
    assert later.states[0].spent_nano == 10_000                  # both ran out: their estimates, spent
    # a late settlement of the lost request adds only what exceeds its estimate
    lim.settle(Reservation(ss, "lost", first.now_ms, est), 2, 7000)
    await asyncio.sleep(0.05)
    _, (state,) = await lim.peek(ss)
    assert state.spent_nano == 12_000


async def test_budget_periods_agree_with_python(make):
    lim = await make()
    for period in ("day", "month", "total"):
        ss = subjects(QuotaSpec(budget_usd=1.0, period=period), ident=f"p-{period}")
        d = await lim.reserve(ss, "r", EST)
        _, _, end = period_bounds(period, d.now_ms / 1000)
        assert d.states[0].period_end_ms == int(end * 1000), period


def test_month_ends_in_the_script_and_in_python(redis_server):
    """The Lua calendar (civil_from_days) against Python's for month ends over 400 years."""
    from gateway.quota.scripts import _COMMON

    script = _COMMON.replace("local t = redis.call('TIME')\nlocal now = tonumber(t[1]) * 1000 + "
                             "math.floor(tonumber(t[2]) / 1000)", "local now = tonumber(ARGV[1])") + \
        "\nlocal pid, pend = period(2)\nreturn {pid, int(pend)}"

    async def run() -> list:
        client = RespClient(redis_server.url)
        out = []
        for year in (1970, 1999, 2000, 2024, 2100, 2369):
            for month in (1, 2, 12):
                ts = time.mktime((year, month, 15, 12, 0, 0, 0, 0, 0)) if year < 2038 else \
                    (365.2425 * (year - 1970) + 30.44 * (month - 1) + 14) * 86400
                reply = await client.call(encode(b"EVAL", script.encode(), b"0", str(int(ts * 1000)).encode()))
                out.append((ts, reply[0].decode(), int(reply[1])))
        await client.aclose()
        return out

    for ts, pid, end_ms in asyncio.run(run()):
        want_pid, _, want_end = period_bounds("month", ts)
        assert (pid, end_ms) == (want_pid, int(want_end * 1000))


async def test_concurrent_reserves_are_decided_one_after_another(make):
    """Requests arriving together (one script call for Redis) get the answers they would
    get one by one: the limit holds exactly and each sees the count its admission left."""
    lim = await make()
    key, tenant = QuotaSpec(rpm=5, tpm=1000), QuotaSpec(max_parallel=4, budget_usd=1.0, period="day")
    ss = subjects(key, tenant)
    est = Estimate(10, 20, 1000)
    got = await asyncio.gather(*(lim.reserve(ss, f"c{i}", est) for i in range(9)))
    admitted = [d for d in got if d.admitted]
    assert len(admitted) == 4                                       # the tenant's max_parallel, first
    assert sorted(d.states[0].requests for d in admitted) == [1, 2, 3, 4]
    assert sorted(d.states[0].tokens for d in admitted) == [30, 60, 90, 120]
    assert sorted(d.states[1].in_flight for d in admitted) == [1, 2, 3, 4]
    assert sorted(d.states[1].reserved_nano for d in admitted) == [1000, 2000, 3000, 4000]
    refused = [d for d in got if not d.admitted]
    assert all(d.kind == CONCURRENCY and d.subject == 1 and d.states[1].in_flight == 4 for d in refused)
    for d in admitted[:2]:                                          # two settle: one more passes, then rpm
        lim.settle(Reservation(ss, f"c{got.index(d)}", d.now_ms, est), 30, 1000)
    await asyncio.sleep(0.05)
    more = await asyncio.gather(*(lim.reserve(ss, f"m{i}", est) for i in range(3)))
    assert [d.admitted for d in more].count(True) == 1              # the key's 5th request; then rpm
    refused = [d for d in more if not d.admitted]
    assert {d.kind for d in refused} <= {REQUESTS, CONCURRENCY}
    assert any(d.kind == REQUESTS and d.subject == 0 and d.states[0].requests == 5 for d in refused)


async def test_reserves_of_one_turn_share_one_script_call(redis_server, prefix):
    """Reserves that arrive in the same event-loop turn go in one EVALSHA; those arriving
    while it is answered wait for it and leave together in the next."""
    import redis as redis_py

    lim = RedisLimiter(redis_server.url, "test", prefix=prefix, window_s=60, lease_s=900, timeout_s=0.5,
                       retry_after_s=0.2, settle_interval_s=0.002)
    await lim.start()
    ss = subjects(QuotaSpec(rpm=100))
    stats = redis_py.Redis.from_url(redis_server.url)
    try:
        stats.config_resetstat()
        got = await asyncio.gather(*(lim.reserve(ss, f"a{i}", EST) for i in range(10)))
        assert sorted(d.states[0].requests for d in got) == list(range(1, 11))
        assert stats.info("commandstats")["cmdstat_evalsha"]["calls"] == 1
        stats.config_resetstat()
        first = asyncio.ensure_future(lim.reserve(ss, "b0", EST))
        await asyncio.sleep(0)                                       # b0 is written (or on its way)
        rest = [lim.reserve(ss, f"b{i}", EST) for i in range(1, 6)]
        got = await asyncio.gather(first, *rest)
        assert sorted(d.states[0].requests for d in got) == list(range(11, 17))
        assert stats.info("commandstats")["cmdstat_evalsha"]["calls"] == 2
    finally:
        stats.close()
        await lim.aclose()


async def test_a_unix_socket_url_reaches_redis(tmp_path):
    """`limits.redis_url: unix:///path/redis.sock?db=N`: a Redis next to the gateway."""
    import subprocess

    from tests.redis_server import _redis_server_binary

    sock = tmp_path / "redis.sock"
    server = subprocess.Popen([str(_redis_server_binary()), "--port", "0", "--unixsocket", str(sock),
                               "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            if sock.exists():
                break
            await asyncio.sleep(0.02)
        lim = RedisLimiter(f"unix://{sock}?db=2", "test", prefix="u:", window_s=60, lease_s=900, timeout_s=0.5,
                           retry_after_s=0.2, settle_interval_s=0.002)
        await lim.start()
        ss = subjects(QuotaSpec(rpm=2))
        got = [await lim.reserve(ss, f"u{i}", EST) for i in range(3)]
        assert [d.admitted for d in got] == [True, True, False]
        client = RespClient(f"unix://{sock}")
        assert await client.call(encode(b"SELECT", b"2")) == b"OK"
        assert await client.call(encode(b"EXISTS", b"u:q:{team}:k:k1:st")) == 1    # in db 2, as asked
        await client.aclose()
        await lim.aclose()
    finally:
        server.kill()
        server.wait()


async def test_settlements_ride_along_with_the_next_reserve(redis_server, prefix):
    """Settlements that fall due while a reserve call for the same subjects is still open
    leave with it, applied before it: the slot they free is free for that reserve, and no
    settle call of their own is sent."""
    import redis as redis_py

    lim = RedisLimiter(redis_server.url, "test", prefix=prefix, window_s=60, lease_s=900, timeout_s=0.5,
                       retry_after_s=0.2, settle_interval_s=1.0)
    await lim.start()
    ss = subjects(QuotaSpec(max_parallel=1, budget_usd=1.0, period="day"))
    est = Estimate(10, 20, 1000)
    stats = redis_py.Redis.from_url(redis_server.url)
    try:
        stats.config_resetstat()
        first = await lim.reserve(ss, "r0", est)
        assert first.admitted
        lim.settle(Reservation(ss, "r0", first.now_ms, est), 25, 700)
        second = asyncio.ensure_future(lim.reserve(ss, "r1", est))
        await asyncio.sleep(0)              # r1's call is open: built, not yet written
        lim._flush_handle.cancel()
        lim._flush()                        # the settle timer falls due now
        second = await second
        assert second.admitted                                         # r0's slot was released first
        state = second.states[0]
        assert (state.in_flight, state.spent_nano, state.reserved_nano) == (1, 700, 1000)
        assert stats.info("commandstats")["cmdstat_evalsha"]["calls"] == 2
    finally:
        stats.close()
        await lim.aclose()
