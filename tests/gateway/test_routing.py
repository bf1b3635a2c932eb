"""Router behaviour with a scripted attempt function (routing knows no wire formats)."""

import random
from collections import Counter

import pytest

from gateway.config import parse_config
from gateway.errors import AllDeploymentsFailed, UpstreamRejected
from gateway.routing import BreakerState, CircuitBreaker, Router
from gateway.upstream import UpstreamError


def make_router(strategy="fallback", weights=(1, 1), retries=0, **router):
    cfg = parse_config({
        "providers": {"a": {"type": "openai", "base_url": "http://a"}, "b": {"type": "openai", "base_url": "http://b"}},
        "models": {"m": {"strategy": strategy, "deployments": [
            {"provider": "a", "model": "x", "weight": weights[0]},
            {"provider": "b", "model": "y", "weight": weights[1]}]}},
        "router": {"retries": retries, "backoff_base_s": 0.001, **router},
    }, {})
    return Router(cfg, rng=random.Random(7))


async def test_fallback_to_second_on_500():
    router = make_router()
    route = router.routes["m"]

    async def attempt(dep):
        if dep.name == "a/x":
            raise UpstreamError("http_500", status=500)
        return "answer"

    attempts = []
    dep, result = await router.run(route, attempt, attempts)
    assert (dep.name, result) == ("b/y", "answer")
    assert [(a.deployment, a.outcome) for a in attempts] == [("a/x", "http_500"), ("b/y", "ok")]


async def test_retry_same_deployment_then_success():
    router = make_router(retries=2)
    calls = Counter()

    async def attempt(dep):
        calls[dep.name] += 1
        if calls[dep.name] < 3:
            raise UpstreamError("timeout")
        return dep.name

    attempts = []
    dep, _ = await router.run(router.routes["m"], attempt, attempts)
    assert dep.name == "a/x" and calls["a/x"] == 3 and len(attempts) == 3


async def test_client_error_is_not_retried_or_fallen_back():
    router = make_router(retries=2)

    async def attempt(dep):
        raise UpstreamError("http_400", status=400, body=b'{"error": {"message": "bad tool schema"}}')

    attempts = []
    with pytest.raises(UpstreamRejected) as info:
        await router.run(router.routes["m"], attempt, attempts)
    assert info.value.status == 400 and "bad tool schema" in info.value.message
    assert len(attempts) == 1


async def test_long_retry_after_falls_over_without_waiting():
    router = make_router(retries=3, max_retry_after_s=1)

    async def attempt(dep):
        if dep.name == "a/x":
            raise UpstreamError("http_429", status=429, retry_after_s=30)
        return "ok"

    attempts = []
    dep, _ = await router.run(router.routes["m"], attempt, attempts)
    assert dep.name == "b/y" and [a.outcome for a in attempts] == ["http_429", "ok"]


async def test_all_failed_lists_attempts_and_status():
    router = make_router()

    async def attempt(dep):
        raise UpstreamError("timeout")

    with pytest.raises(AllDeploymentsFailed) as info:
        await router.run(router.routes["m"], attempt, [])
    assert info.value.status == 504
    assert "a/x: timeout" in info.value.message and "b/y: timeout" in info.value.message


async def test_weighted_split_within_bounds():
    router = make_router("weighted", weights=(3, 1))
    seen = Counter()

    async def attempt(dep):
        return dep.name

    for _ in range(4000):
        dep, _ = await router.run(router.routes["m"], attempt, [])
        seen[dep.name] += 1
    share = seen["a/x"] / 4000
    # Binomial(4000, 0.75): sd ~ 0.0068; 5 sd bounds.
    assert 0.715 < share < 0.785, seen


async def test_least_busy_prefers_idle_deployment():
    router = make_router("least-busy")
    route = router.routes["m"]
    route.deployments[0].in_flight = 5
    dep, _ = await router.run(route, _echo, [])
    assert dep.name == "b/y"


async def test_least_latency_prefers_faster_deployment():
    router = make_router("least-latency")
    route = router.routes["m"]
    route.deployments[0].observe_latency(300)
    route.deployments[1].observe_latency(20)
    dep, _ = await router.run(route, _echo, [])
    assert dep.name == "b/y"


async def _echo(dep):
    return dep.name


def test_breaker_opens_then_half_opens_one_probe():
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=3, cooldown_s=10, clock=lambda: now[0])
    for _ in range(3):
        assert breaker.acquire()
        breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and not breaker.acquire()
    now[0] = 10.5
    assert breaker.acquire() and breaker.state is BreakerState.HALF_OPEN
    assert not breaker.acquire()            # only one probe at a time
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    now[0] = 21
    assert breaker.acquire()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED and breaker.acquire()


async def test_open_circuit_is_skipped_and_reported():
    router = make_router(breaker={"failure_threshold": 1, "cooldown_s": 60})
    route = router.routes["m"]

    async def failing_a(dep):
        if dep.name == "a/x":
            raise UpstreamError("http_503", status=503)
        return dep.name

    await router.run(route, failing_a, [])
    assert route.deployments[0].breaker.state is BreakerState.OPEN
    attempts = []
    dep, _ = await router.run(route, failing_a, attempts)
    assert dep.name == "b/y"
    assert [a.outcome for a in attempts] == ["ok"]     # open circuit sorted last, never tried


def test_timeouts_with_a_skipped_open_breaker_are_still_a_504():
    """The retry skipped because the breaker opened meanwhile does not turn a timeout into a
    mixed failure: README promises 504 when every deployment timed out."""
    from gateway.errors import AttemptRecord
    attempts = [AttemptRecord("primary/m", "timeout", 1000.0), AttemptRecord("primary/m", "circuit_open", 0.0)]
    err = AllDeploymentsFailed("m", attempts)
    assert (err.status, err.code) == (504, "upstream_timeout")
    only_open = AllDeploymentsFailed("m", [AttemptRecord("primary/m", "circuit_open", 0.0)])
    assert only_open.status == 503
