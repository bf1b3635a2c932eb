"""Guardrail threads: a scan whose caller stopped waiting stops too, tenants take turns,
and a tenant over its in-flight cap is refused at once (its fail policy decides)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from guardrails import GuardrailEngine, GuardrailsConfig

DENSE_100K = "a@b.co 555-123-4567 " * 5000   # 10,000 PII values: seconds of Presidio, chunked or not
SHORT = "mail jane.doe@example.com please"
MASKED = "mail <EMAIL_ADDRESS_1> please"


def _config(**extra) -> GuardrailsConfig:
    return GuardrailsConfig.model_validate({
        "spacy_model": None,
        "toxicity_model": None,
        "threads": 1,
        "tenants": {
            "short-budget": {"pii": {"input_action": "mask", "budget_ms": 300}, "fail": "closed"},
            "long-budget": {"pii": {"input_action": "mask", "budget_ms": 2000}, "fail": "closed"},
            "open": {"pii": {"input_action": "mask", "budget_ms": 2000}, "fail": "open"},
            "quiet": {"pii": {"input_action": "mask", "budget_ms": 3000}, "fail": "closed"},
        },
        **extra,
    })


@pytest.fixture
async def one_thread() -> AsyncIterator[GuardrailEngine]:
    eng = GuardrailEngine.from_config(_config())
    await eng.start()
    yield eng
    await eng.aclose()


async def test_a_timed_out_scan_frees_its_worker(one_thread: GuardrailEngine) -> None:
    policy = one_thread.policy_for("short-budget", "m")
    started = time.perf_counter()
    cut = await one_thread.check_input(policy, [DENSE_100K])
    assert cut.violation is not None and cut.violation.code == "guardrail_unavailable"
    assert time.perf_counter() - started < 3.0          # about the budget, on a loaded machine
    # The only worker thread was running that scan. It stops at its next chunk, so the
    # next request (same tenant, same thread) is served within its own 300 ms budget
    # instead of waiting for the abandoned scan to finish (about a minute unchunked).
    follow = await one_thread.check_input(policy, [SHORT])
    assert follow.violation is None, follow.results
    assert follow.texts == [MASKED]


async def test_a_cancelled_request_stops_its_scan(one_thread: GuardrailEngine) -> None:
    # A client that disconnects cancels its request task: the scan must stop with it.
    policy = one_thread.policy_for("long-budget", "m")
    task = asyncio.create_task(one_thread.check_input(policy, [DENSE_100K]))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    follow = await one_thread.check_input(one_thread.policy_for("short-budget", "m"), [SHORT])
    assert follow.violation is None and follow.texts == [MASKED]


async def test_tenants_take_turns_on_one_thread(one_thread: GuardrailEngine) -> None:
    heavy = one_thread.policy_for("long-budget", "m")
    # Three dense scans of one tenant, queued on the single thread...
    noisy = [asyncio.create_task(one_thread.check_input(heavy, [DENSE_100K], tenant="noisy")) for _ in range(3)]
    await asyncio.sleep(0.1)
    # ...and another tenant's short requests get a turn between their chunks (a chunk is
    # tens of milliseconds), instead of waiting behind the dense scans (3.5 s of CPU each).
    for _ in range(5):
        started = time.perf_counter()
        quiet = await one_thread.check_input(one_thread.policy_for("quiet", "m"), [SHORT], tenant="quiet")
        assert quiet.violation is None and quiet.texts == [MASKED]
        assert time.perf_counter() - started < 2.0
    for outcome in await asyncio.gather(*noisy):
        assert outcome.violation is None or outcome.violation.code == "guardrail_unavailable"


async def test_a_tenant_over_its_in_flight_cap_fails_fast_per_its_policy() -> None:
    eng = GuardrailEngine.from_config(_config(tenant_max_in_flight=2))
    await eng.start()
    try:
        closed = eng.policy_for("long-budget", "m")
        burst = [asyncio.create_task(eng.check_input(closed, [DENSE_100K], tenant="noisy")) for _ in range(4)]
        done, _ = await asyncio.wait(burst, timeout=0.5)
        # Two are over the cap: refused at once (fail closed: 503), not queued behind the others.
        refused = [t.result() for t in done]
        assert len(refused) == 2
        for outcome in refused:
            assert outcome.results[0].latency_ms < 500         # not queued for its 2 s budget
            assert outcome.violation is not None and outcome.violation.code == "guardrail_unavailable"
            assert outcome.violation.status == 503 and "busy" in outcome.violation.message
            assert outcome.results[0].action == "error" and outcome.results[0].reason == "busy"
        # Failing open instead: the request passes unscanned, recorded as an error.
        opened = await eng.check_input(eng.policy_for("open", "m"), [SHORT], tenant="noisy")
        assert opened.violation is None and opened.texts is None
        assert opened.results[0].action == "error" and opened.results[0].reason == "busy"
        # Another tenant is not affected by the noisy one's cap.
        quiet = await eng.check_input(closed, [SHORT], tenant="quiet")
        assert quiet.violation is None and quiet.texts == [MASKED]
        for task in burst:
            task.cancel()
        await asyncio.gather(*burst, return_exceptions=True)
    finally:
        await eng.aclose()


class _Hanging:
    """Presidio's analyzer, wrapped: a text with the marker takes `seconds` in one call,
    a step no chunking can cut (a pathological input, a hung library call)."""

    def __init__(self, analyzer, seconds: float) -> None:
        self._analyzer = analyzer
        self.seconds = seconds

    def analyze(self, text: str, *args, **kwargs):
        if "hang-marker" in text:
            time.sleep(self.seconds)
        return self._analyzer.analyze(text, *args, **kwargs)


async def test_one_tenant_never_holds_every_thread() -> None:
    eng = GuardrailEngine.from_config(_config(threads=2))
    await eng.start()
    detector = eng._detectors.pii
    assert detector is not None
    detector._analyzer = _Hanging(detector._analyzer, seconds=3.0)
    try:
        quiet_policy = eng.policy_for("quiet", "m")
        first = await eng.check_input(quiet_policy, [SHORT], tenant="quiet")       # the quiet tenant is active
        assert first.violation is None
        # The stuck tenant's requests each hang a thread for 3 s (past their 300 ms budget)...
        stuck = [asyncio.create_task(eng.check_input(eng.policy_for("short-budget", "m"), ["hang-marker"],
                                                     tenant="stuck")) for _ in range(3)]
        await asyncio.sleep(0.1)
        # ...but only one thread at a time while another tenant is active: the other is free.
        for _ in range(3):
            started = time.perf_counter()
            quiet = await eng.check_input(quiet_policy, [SHORT], tenant="quiet")
            assert quiet.violation is None and quiet.texts == [MASKED]
            assert time.perf_counter() - started < 1.5
        for outcome in await asyncio.gather(*stuck):
            assert outcome.violation is not None and outcome.results[0].reason == "timeout"
    finally:
        await eng.aclose()
