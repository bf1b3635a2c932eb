"""A guardrail that raises or hangs, on team-a's requests only, while team-b and team-c keep
sending requests through the same guardrails (the same Presidio detector and threads).

team-a's models: a-chat fails closed (a 503 the SDKs retry, in the caller's format), a-open
fails open (the request goes on, `pii=error` in x-sluice-guardrails); both with a 500 ms
budget. The fault: Presidio's analyzer wrapped (conftest.GuardrailFault) to raise, or to
sleep 3 s, on texts carrying a marker.
"""

from __future__ import annotations

import time

import httpx
import pytest

from tests.faults.conftest import (
    A_FALLBACK,
    A_OPEN,
    MARKER,
    Background,
    GUARDRAIL_BUDGET_MS,
    FaultRow,
    GuardrailFault,
    Outcome,
    Suite,
    check_others,
    summary,
    unique_prompt,
    wait_until,
)

BUDGET_S = GUARDRAIL_BUDGET_MS / 1000
# What a request may take when its guardrail fails: fail closed stops at the input; fail
# open waits the budget on the input and on the output, and goes on (+1 s of slack).
MAX_SECONDS = {A_FALLBACK: BUDGET_S + 1.0, A_OPEN: 2 * BUDGET_S + 1.0}


def team_a(suite: Suite, model: str, each: int = 2) -> list[Outcome]:
    """team-a's requests carrying the marker, from four concurrent clients: OpenAI and
    Anthropic SDKs, streamed and not."""
    fg = suite.fg
    calls = [lambda s=s, w=w: fg.call("team-a", model, unique_prompt(f"{MARKER} hello"), stream=s, wire=w)
             for s in (False, True) for w in ("openai", "anthropic")]
    return fg.concurrently(calls * each)


def recovered(suite: Suite, fault: GuardrailFault) -> str:
    """With the fault removed, team-a's requests (marker included) pass the guardrail."""
    fault.mode = None
    fg = suite.fg
    started = time.monotonic()

    def passes() -> bool:
        outs = [fg.call("team-a", m, unique_prompt(f"{MARKER} after"), stream=s)
                for m in (A_FALLBACK, A_OPEN) for s in (False, True)]
        return all(o.status == 200 and o.ended == "complete" and "pii=pass" in (o.guardrails or "") for o in outs)

    assert wait_until(passes, timeout_s=fault.hang_s + 8, every_s=0.3), "team-a's guardrail did not recover"
    return f"yes ({time.monotonic() - started:.1f} s after the fault was removed)"


def guardrail_errors(suite: Suite) -> float:
    # "error", or "error.<why>" (failed, timeout, ...)
    return suite.fg.metric("sluice_guardrail_actions_total", guardrail="pii",
                           action=lambda a: a == "error" or a.startswith("error."))


@pytest.mark.parametrize("mode", ["raise", "hang"])
def test_guardrail_fault(suite: Suite, guardrail_fault: GuardrailFault, mode: str, fault_row: FaultRow) -> None:
    fg = suite.fg
    fault_row.fault = ("guardrail raises (PII analyzer)" if mode == "raise"
                       else f"guardrail hangs ({guardrail_fault.hang_s:g} s, budget {BUDGET_S * 1000:.0f} ms)")
    errors_before = guardrail_errors(suite)
    with Background(fg) as others:
        time.sleep(0.3)
        guardrail_fault.mode = mode
        closed = team_a(suite, A_FALLBACK)
        opened = team_a(suite, A_OPEN)
        fault_row.recovered = recovered(suite, guardrail_fault)
    fault_row.client = f"{A_FALLBACK} (fail closed): {summary(closed)}; {A_OPEN} (fail open): {summary(opened)}"
    fault_row.others = check_others(others.outcomes, suite.baseline)
    fault_row.accounting = fg.accounted()

    # Fail closed: 503 in the caller's format, within about the budget, the provider not asked.
    for o in closed:
        assert (o.status, o.ended) == (503, "error-status"), o
        assert o.code == ("guardrail_unavailable" if o.wire == "openai" else "api_error"), o
    # Fail open: answered, and the caller is told the guardrail did not run.
    for o in opened:
        assert (o.status, o.ended) == (200, "complete") and "pii=error" in (o.guardrails or ""), o
    # Each stage waits for its guardrail at most about the budget: input, then output.
    slow = [(o.model, o.wire, "stream" if o.stream else "non-stream", round(o.seconds, 2), o.guardrails)
            for o in closed + opened if o.seconds > MAX_SECONDS[o.model]]
    assert not slow, f"slower than the guardrail budget allows: {slow}"
    counted = guardrail_errors(suite) - errors_before
    assert counted >= len(closed) + len(opened), [      # every failure counted in /metrics
        line for line in httpx.get(f"{fg.url}/metrics").text.splitlines() if "guardrail_actions" in line]
