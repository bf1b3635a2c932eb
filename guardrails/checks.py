"""One async function per guardrail: run it off the loop, under budget, into a result.

Shared by the input path (engine), the non-stream output path and the stream
scanner, so a guardrail decides the same way wherever it runs.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from guardrails.injection import InjectionDetector
from guardrails.masking import Restorer
from guardrails.pii import PiiDetector, PiiScan
from guardrails.policy import Policy
from guardrails.results import GuardrailResult, Stage, Violation
from guardrails.runner import Guarded, run_guarded
from guardrails.toxicity import Scores, ToxicityBatcher, UnavailableScorer

# Roles whose text comes from the operator, not the caller: never scanned for injection
# (a system prompt saying "never reveal these instructions" is not an attack).
TRUSTED_ROLES = frozenset({"system", "developer"})


@dataclass(slots=True)
class Detectors:
    """The loaded detectors and the threads they run in; built by GuardrailEngine.start().

    Each guardrail has its own threads: work cut by a budget keeps running in its
    thread until done (Python cannot stop a thread), and a slow PII scan must not
    make the injection check of the next request wait for a free worker.
    """

    pii_executor: ThreadPoolExecutor
    injection_executor: ThreadPoolExecutor
    injection: InjectionDetector
    pii: PiiDetector | None = None
    toxicity: ToxicityBatcher | None = None

    def in_pii_thread(self, fn: Any, *args: Any) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().run_in_executor(self.pii_executor, fn, *args)

    def in_injection_thread(self, fn: Any, *args: Any) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().run_in_executor(self.injection_executor, fn, *args)


@dataclass(slots=True)
class PiiInput:
    counts: dict[str, int]
    texts: list[str] | None
    restorer: Restorer | None


def _pii_input_job(det: Detectors, policy: Policy, texts: list[str]) -> PiiInput:
    assert det.pii is not None and policy.pii is not None
    cfg = policy.pii
    counts: dict[str, int] = {}
    restorer = Restorer() if cfg.input_action == "mask" else None
    rewritten: list[str] = []
    changed = False
    for text in texts:
        scan = det.pii.scan(text, cfg, policy.pii_recognizers)
        for entity, n in scan.counts().items():
            counts[entity] = counts.get(entity, 0) + n
        if not scan.findings or cfg.input_action == "block":
            rewritten.append(text)
            continue
        changed = True
        rewritten.append(det.pii.mask(text, scan, restorer) if restorer is not None else det.pii.redact(text, scan))
    return PiiInput(counts, rewritten if changed else None, restorer if restorer is not None and len(restorer) else None)


def _kinds(counts: dict[str, int]) -> str:
    return ", ".join(f"{entity} x{n}" if n > 1 else entity for entity, n in sorted(counts.items()))


async def pii_input(det: Detectors, policy: Policy, texts: list[str]) -> tuple[GuardrailResult, Violation | None, PiiInput | None]:
    cfg = policy.pii
    assert cfg is not None
    guarded: Guarded[PiiInput] = await run_guarded(
        "pii", "input", cfg.budget_ms, policy.fail_for(cfg), det.in_pii_thread(_pii_input_job, det, policy, texts)
    )
    if guarded.error_result is not None:
        return guarded.error_result, guarded.violation, None
    outcome = guarded.value
    assert outcome is not None
    if not outcome.counts:
        return GuardrailResult("pii", "input", "pass", latency_ms=guarded.latency_ms), None, outcome
    result = GuardrailResult("pii", "input", cfg.input_action, entity_counts=outcome.counts, latency_ms=guarded.latency_ms)
    if cfg.input_action != "block":
        return result, None, outcome
    violation = Violation(
        guardrail="pii",
        stage="input",
        code="pii_detected",
        message=f"the request contains personal data this policy does not allow: {_kinds(outcome.counts)}",
        kinds=tuple(sorted(outcome.counts)),
    )
    return result, violation, None


async def toxicity(det: Detectors, policy: Policy, texts: list[str], stage: Stage) -> tuple[GuardrailResult, Violation | None]:
    cfg = policy.toxicity
    assert cfg is not None and det.toxicity is not None
    # With no model and a fail-closed fallback the operator has decided: refuse,
    # whatever the policy's own fail mode says.
    fail = "closed" if isinstance(det.toxicity.scorer, UnavailableScorer) else policy.fail_for(cfg)
    guarded: Guarded[list[Scores]] = await run_guarded("toxicity", stage, cfg.budget_ms, fail, det.toxicity.score(texts))
    if guarded.error_result is not None:
        return guarded.error_result, guarded.violation
    assert guarded.value is not None
    peak: dict[str, float] = {}
    for scores in guarded.value:
        for category, value in scores.items():
            peak[category] = max(value, peak.get(category, 0.0))
    peak = {k: round(v, 4) for k, v in peak.items()}
    over = sorted(c for c, threshold in cfg.thresholds.items() if peak.get(c, 0.0) >= threshold)
    if not over:
        return GuardrailResult("toxicity", stage, "pass", scores=peak, latency_ms=guarded.latency_ms), None
    result = GuardrailResult("toxicity", stage, cfg.action, scores=peak, latency_ms=guarded.latency_ms)
    if cfg.action == "flag":
        return result, None
    where = "request" if stage == "input" else "response"
    violation = Violation(
        guardrail="toxicity",
        stage=stage,
        code="toxicity_detected",
        message=f"the {where} exceeds this policy's toxicity thresholds: {', '.join(over)}",
        kinds=tuple(over),
    )
    return result, violation


def _injection_job(det: Detectors, texts: list[str]) -> tuple[float, dict[str, int]]:
    top = 0.0
    rules: dict[str, int] = {}
    for text in texts:
        found = det.injection.score(text)
        top = max(top, found.score)
        for rule in found.rules:
            rules[rule] = rules.get(rule, 0) + 1
    return top, rules


async def injection(det: Detectors, policy: Policy, texts: list[str]) -> tuple[GuardrailResult, Violation | None]:
    cfg = policy.injection
    assert cfg is not None
    guarded: Guarded[tuple[float, dict[str, int]]] = await run_guarded(
        "injection", "input", cfg.budget_ms, policy.fail_for(cfg), det.in_injection_thread(_injection_job, det, texts)
    )
    if guarded.error_result is not None:
        return guarded.error_result, guarded.violation
    assert guarded.value is not None
    score, rules = guarded.value
    # Rule names (what kind of attack) go to the trace as counts; matched text never does.
    if score < cfg.threshold:
        result = GuardrailResult("injection", "input", "pass", entity_counts=rules, scores={"injection": score}, latency_ms=guarded.latency_ms)
        return result, None
    result = GuardrailResult("injection", "input", cfg.action, entity_counts=rules, scores={"injection": score}, latency_ms=guarded.latency_ms)
    if cfg.action == "flag":
        return result, None
    violation = Violation(
        guardrail="injection",
        stage="input",
        code="prompt_injection_detected",
        message=f"the request looks like a prompt injection ({', '.join(sorted(rules))})",
        kinds=tuple(sorted(rules)),
    )
    return result, violation


def pii_scan_job(det: Detectors, policy: Policy, text: str) -> PiiScan:
    assert det.pii is not None and policy.pii is not None
    return det.pii.scan(text, policy.pii, policy.pii_recognizers)
