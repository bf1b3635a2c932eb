"""Runs one guardrail under its time budget and applies its fail policy.

A guardrail that raises or exceeds `budget_ms` is cut: the request stops waiting
(`asyncio.wait_for`; a worker thread already running finishes on its own and its
answer is dropped). Fail open records action "error" and lets the content pass;
fail closed turns the error into a violation. Either way the error is in the results.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Generic, TypeVar

from guardrails.config import FailMode
from guardrails.results import STATUS_GUARDRAIL_UNAVAILABLE, GuardrailName, GuardrailResult, Stage, Violation

T = TypeVar("T")


@dataclass(slots=True)
class Guarded(Generic[T]):
    value: T | None
    latency_ms: float
    # Set only when the guardrail failed (raised or timed out).
    error_result: GuardrailResult | None = None
    violation: Violation | None = None


async def run_guarded(
    name: GuardrailName,
    stage: Stage,
    budget_ms: float,
    fail: FailMode,
    work: Awaitable[T],
) -> Guarded[T]:
    started = time.perf_counter()
    try:
        value = await asyncio.wait_for(work, timeout=budget_ms / 1000.0)
    except TimeoutError:
        error = f"timeout: exceeded budget of {budget_ms:g} ms"
    except Exception as exc:  # noqa: BLE001 - a failing guardrail follows its fail policy
        error = f"{type(exc).__name__}: {str(exc)[:200]}"
    else:
        return Guarded(value, _ms(started))
    latency = _ms(started)
    result = GuardrailResult(name=name, stage=stage, action="error", latency_ms=latency, error=error)
    violation = None
    if fail == "closed":
        reason = "timed out" if error.startswith("timeout") else "failed"
        violation = Violation(
            guardrail=name,
            stage=stage,
            code="guardrail_unavailable",
            message=f"the {name} guardrail {reason} on the {stage} and the policy fails closed",
            status=STATUS_GUARDRAIL_UNAVAILABLE,
        )
    return Guarded(None, latency, result, violation)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 3)
