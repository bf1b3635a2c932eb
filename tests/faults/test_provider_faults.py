"""Provider faults (the mock's fault rules, on team-a's upstream models only) while team-b
and team-c keep sending requests: 5xx, 429, timeouts, connection resets, a stream that
dies after its first bytes, an error event as a stream's first event."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.faults.conftest import (
    A_FALLBACK,
    A_SOLO,
    BREAKER_COOLDOWN_S,
    Background,
    FaultRow,
    Outcome,
    Suite,
    check_others,
    summary,
    unique_prompt,
    wait_until,
)

# Errors in the caller's wire format: OpenAI's `error.code`, Anthropic's `error.type`.
ANTHROPIC_TYPE = {502: "api_error", 503: "api_error", 504: "api_error"}
OPENAI_CODE = {502: "all_deployments_failed", 503: "no_deployment_available", 504: "upstream_timeout"}


@dataclass(frozen=True)
class ProviderFault:
    name: str
    rule: dict
    # what a caller of the model without a fallback may see: the fault's own status, and
    # 503 once the circuit breaker took the deployment out
    solo_statuses: frozenset[int]


FAULTS = [
    ProviderFault("provider 500", {"mode": "status", "status": 500}, frozenset({502, 503})),
    ProviderFault("provider 503", {"mode": "status", "status": 503}, frozenset({503})),
    ProviderFault("provider 429 (Retry-After 0.2 s)", {"mode": "status", "status": 429, "retry_after": 0.2},
                  frozenset({503})),
    ProviderFault("provider timeout (no answer)", {"mode": "timeout"}, frozenset({504, 503})),
    ProviderFault("connection reset (no response)", {"mode": "drop"}, frozenset({502, 503})),
]


def team_a(suite: Suite, model: str, *, streams: tuple[bool, ...] = (False, True), each: int = 2) -> list[Outcome]:
    """team-a's requests to `model` from four concurrent clients: OpenAI and Anthropic SDKs,
    streamed and not."""
    fg = suite.fg
    calls = [lambda s=s, w=w: fg.call("team-a", model, unique_prompt("hello"), stream=s, wire=w)
             for s in streams for w in ("openai", "anthropic")] * each
    return fg.concurrently(calls)


def recovered(suite: Suite) -> str:
    """After the fault is gone (and the breaker's cool-down), team-a's primary deployments
    answer again, streams included, with no restart."""
    fg = suite.fg
    expected = {A_FALLBACK: "primary/ma", A_SOLO: "primary/ma-solo"}

    def primary_answers() -> bool:
        outs = [fg.call("team-a", m, unique_prompt("after"), stream=s) for m in expected for s in (False, True)]
        return all(o.status == 200 and o.ended == "complete" and o.deployment == expected[o.model] for o in outs)

    started = time.monotonic()
    assert wait_until(primary_answers, timeout_s=BREAKER_COOLDOWN_S + 8, every_s=0.3), "team-a did not recover"
    return f"yes ({time.monotonic() - started:.1f} s after the fault, breaker cool-down {BREAKER_COOLDOWN_S:g} s)"


def assert_wire_format_error(o: Outcome) -> None:
    if o.wire == "openai":
        assert o.code == OPENAI_CODE[o.status], o
    else:
        assert o.code == ANTHROPIC_TYPE[o.status], o


def under_fault(suite: Suite, row: FaultRow, rules: list[dict], requests: Callable[[], list[Outcome]],
                describe: Callable[[list[Outcome]], str]) -> list[Outcome]:
    """Set the mock's fault rules while team-b and team-c send requests, run team-a's
    `requests`, remove the fault; then fill the table row: what team-a saw, recovery, the
    other tenants (checked) and the accounting (checked)."""
    fg, primary = suite.fg, suite.mocks["primary"]
    with Background(fg) as others:
        primary.faults(*rules)
        outcomes = requests()
        primary.clear()
        row.client = describe(outcomes)
        row.recovered = recovered(suite)
    row.others = check_others(others.outcomes, suite.baseline)
    row.accounting = fg.accounted()
    return outcomes


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_provider_fault(suite: Suite, fault: ProviderFault, clean_faults, fault_row: FaultRow) -> None:
    fault_row.fault = fault.name
    rules = [{**fault.rule, "model": "ma"}, {**fault.rule, "model": "ma-solo"}]
    with_fallback, without = [], []

    def requests() -> list[Outcome]:
        with_fallback.extend(team_a(suite, A_FALLBACK))
        without.extend(team_a(suite, A_SOLO))
        return with_fallback + without

    under_fault(suite, fault_row, rules, requests, lambda _: (
        f"{A_FALLBACK} (with fallback): {summary(with_fallback)}; {A_SOLO}: {summary(without)}"))

    # With a fallback deployment the caller never sees the fault.
    for o in with_fallback:
        assert (o.status, o.ended, o.deployment) == (200, "complete", "backup/claude-a"), o
    # Without one: the documented status, in the caller's wire format, before any byte
    # (streams included: nothing was sent yet, so an error status, not an event).
    for o in without:
        assert o.ended == "error-status", o
        assert_wire_format_error(o)
        if "http_429" in o.message:                      # the caller learns when to come back
            assert o.retry_after is not None, o
    for o in without:
        assert o.status in fault.solo_statuses, o


def test_stream_dropped_after_first_bytes(suite: Suite, clean_faults, fault_row: FaultRow) -> None:
    """The provider cuts the connection after a few events: they already reached the caller,
    so no fallback is possible; the stream must end with an error event the SDKs raise,
    never a clean-looking end."""
    fault_row.fault = "mid-stream drop (connection cut after 3 events)"
    rule = {"mode": "midstream_drop", "after_events": 3}
    outs = under_fault(
        suite, fault_row, [{**rule, "model": "ma"}, {**rule, "model": "ma-solo"}],
        lambda: team_a(suite, A_FALLBACK, streams=(True,)) + team_a(suite, A_SOLO, streams=(True,)),
        lambda outs: f"streams of {A_FALLBACK} and {A_SOLO}: {summary(outs)}")
    for o in outs:
        assert (o.status, o.ended) == (200, "error-event"), o


def test_error_event_first_falls_back(suite: Suite, clean_faults, fault_row: FaultRow) -> None:
    """A 200 whose first event is an error (Anthropic's overloaded_error mid-stream, OpenAI's
    error data event): nothing reached the caller yet, so the fallback deployment answers."""
    fault_row.fault = "error event as a stream's first event"
    outs = under_fault(suite, fault_row, [{"mode": "stream_error", "model": "ma"}],
                       lambda: team_a(suite, A_FALLBACK, streams=(True,), each=3),
                       lambda outs: f"{A_FALLBACK} streams: {summary(outs)}")
    for o in outs:
        assert (o.status, o.ended, o.deployment) == (200, "complete", "backup/claude-a"), o
