"""Runs one guardrail under its time budget and applies its fail policy.

A guardrail that raises, exceeds `budget_ms` or is refused a thread (its tenant is at
`tenant_max_in_flight`) is cut: the request stops waiting, and cancelling the future it
waited on stops the work at its next chunk (guardrails/scheduler.py), so an abandoned
scan does not keep a thread. Fail open records action "error" and lets the content
pass; fail closed turns the error into a 503 violation. Either way the error is in
the results (with its reason) and in the log, once per burst (guardrails/failure_log.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Generic, TypeVar

from guardrails.config import FailMode
from guardrails.failure_log import FailureLog
from guardrails.results import STATUS_GUARDRAIL_UNAVAILABLE, GuardrailName, GuardrailResult, Stage, Violation
from guardrails.scheduler import TenantBusy

T = TypeVar("T")

_WHAT = {"timeout": "timed out", "busy": "is busy with this tenant's other requests", "failed": "failed"}


@dataclass(slots=True)
class Guarded(Generic[T]):
    value: T | None
    latency_ms: float
    # Set only when the guardrail failed (raised, timed out or was refused a thread).
    error_result: GuardrailResult | None = None
    violation: Violation | None = None


async def run_guarded(
    failures: FailureLog,
    tenant: str,
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
        reason, error = "timeout", f"timeout: exceeded budget of {budget_ms:g} ms"
        detail = f"budget {budget_ms:g} ms"
    except TenantBusy as exc:
        reason, error, detail = "busy", f"busy: {exc}", "tenant_max_in_flight reached"
    except Exception as exc:  # noqa: BLE001 - a failing guardrail follows its fail policy
        reason, error = "failed", f"{type(exc).__name__}: {str(exc)[:200]}"
        detail = type(exc).__name__          # the type only: an exception's text may quote the input
    else:
        return Guarded(value, _ms(started))
    latency = _ms(started)
    result = GuardrailResult(name=name, stage=stage, action="error", latency_ms=latency, error=error, reason=reason)
    outcome = "refused with 503" if fail == "closed" else "passed unscanned"
    failures.report(
        (tenant, name, stage, reason),
        f"the {name} guardrail {_WHAT[reason]} on the {stage} of a request of tenant {tenant!r} ({detail}); "
        f"the policy fails {fail}: {outcome}",
    )
    violation = None
    if fail == "closed":
        violation = Violation(
            guardrail=name,
            stage=stage,
            code="guardrail_unavailable",
            message=f"the {name} guardrail {_WHAT[reason]} on the {stage} and the policy fails closed",
            status=STATUS_GUARDRAIL_UNAVAILABLE,
        )
    return Guarded(None, latency, result, violation)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 3)
