"""A guardrail that times out or raises follows its fail policy, and is counted."""

from __future__ import annotations

from guardrails import GuardrailEngine, summarize

TEXT = "the quick brown fox jumps " * 1300 + "mail jane.doe@example.com"  # ~34k chars: ~20 ms of Presidio
TOO_LONG = "hello world " * 80  # the tiny model has 64 positions: its forward pass raises


async def test_timeout_fail_open_passes_and_records_error(engine: GuardrailEngine) -> None:
    outcome = await engine.check_input(engine.policy_for("slow_open", "m"), [TEXT])
    assert outcome.violation is None
    # Failing open means the text goes out as written: nothing was masked.
    assert outcome.texts is None and outcome.restorer is None
    result = outcome.results[0]
    assert result.action == "error" and result.error is not None and result.error.startswith("timeout")
    assert summarize(outcome.results) == "pii=error"


async def test_timeout_fail_closed_is_a_violation(engine: GuardrailEngine) -> None:
    outcome = await engine.check_input(engine.policy_for("slow_closed", "m"), [TEXT])
    assert outcome.violation is not None
    assert outcome.violation.code == "guardrail_unavailable" and outcome.violation.status == 503
    assert "timed out" in outcome.violation.message
    assert outcome.results[0].action == "error"


async def test_timeout_on_the_output_side(engine: GuardrailEngine) -> None:
    answer = await engine.check_output(engine.policy_for("slow_closed", "m"), TEXT, None)
    assert answer.violation is not None and answer.violation.stage == "output"
    answer = await engine.check_output(engine.policy_for("slow_open", "m"), TEXT, None)
    assert answer.violation is None and answer.text == TEXT
    assert answer.results[0].action == "error"


async def test_raise_fail_open_passes_and_records_error(engine: GuardrailEngine) -> None:
    outcome = await engine.check_input(engine.policy_for("raise_open", "m"), [TOO_LONG])
    assert outcome.violation is None
    result = outcome.results[0]
    assert result.name == "toxicity" and result.action == "error"
    assert result.error is not None and "RuntimeError" in result.error


async def test_raise_fail_closed_is_a_violation(engine: GuardrailEngine) -> None:
    outcome = await engine.check_input(engine.policy_for("raise_closed", "m"), [TOO_LONG])
    assert outcome.violation is not None and outcome.violation.guardrail == "toxicity"
    assert "failed" in outcome.violation.message
