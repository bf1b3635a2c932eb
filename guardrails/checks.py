"""One async function per guardrail: run it off the loop, under budget, into a result.

Shared by the input path (engine), the non-stream output path and the stream
scanner, so a guardrail decides the same way wherever it runs. Every call names the
tenant it works for: the guardrail threads are shared between tenants in turns, and
each tenant has its own in-flight cap (guardrails/scheduler.py).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field

from guardrails.failure_log import FailureLog
from guardrails.injection import InjectionDetector
from guardrails.masking import Restorer
from guardrails.pii import PiiDetector, PiiScan
from guardrails.policy import Policy
from guardrails.results import GuardrailResult, Stage, Violation
from guardrails.runner import Guarded, run_guarded
from guardrails.scheduler import FairScheduler
from guardrails.toxicity import Scores, ToxicityBatcher, UnavailableScorer

# Roles whose text comes from the operator, not the caller: never scanned for injection
# (a system prompt saying "never reveal these instructions" is not an attack).
TRUSTED_ROLES = frozenset({"system", "developer"})


@dataclass(slots=True)
class Detectors:
    """The loaded detectors and the threads they run in; built by GuardrailEngine.start().

    Each guardrail has its own threads, so a slow PII scan never makes the injection
    check of the next request wait for a free worker; within a guardrail, tenants take
    turns chunk by chunk, and work whose request stopped waiting stops at its next chunk.
    """

    pii_jobs: FairScheduler
    injection_jobs: FairScheduler
    injection: InjectionDetector
    chunk_chars: int = 2_000
    chunk_overlap_chars: int = 200
    failures: FailureLog = field(default_factory=FailureLog)
    pii: PiiDetector | None = None
    toxicity: ToxicityBatcher | None = None

    def pii_steps(self, policy: Policy, text: str) -> Generator[None, None, PiiScan]:
        assert self.pii is not None and policy.pii is not None
        return self.pii.scan_steps(text, policy.pii, policy.pii_recognizers, self.chunk_chars, self.chunk_overlap_chars)


@dataclass(slots=True)
class PiiInput:
    counts: dict[str, int]
    texts: list[str] | None
    restorer: Restorer | None


def _pii_input_job(
    det: Detectors, policy: Policy, texts: list[str], scan_upto: list[int] | None
) -> Generator[None, None, PiiInput]:
    """Scan and rewrite every text part; with `scan_upto`, only each text's first
    `scan_upto[i]` characters (the rest passes on as written)."""
    assert det.pii is not None and policy.pii is not None
    cfg = policy.pii
    counts: dict[str, int] = {}
    restorer = Restorer() if cfg.input_action == "mask" else None
    rewritten: list[str] = []
    changed = False
    for i, text in enumerate(texts):
        upto = len(text) if scan_upto is None else scan_upto[i]
        scanned = text if upto >= len(text) else text[:upto]
        if i:
            yield
        scan = yield from det.pii_steps(policy, scanned)
        for entity, n in scan.counts().items():
            counts[entity] = counts.get(entity, 0) + n
        if not scan.findings or cfg.input_action == "block":
            rewritten.append(text)
            continue
        changed = True
        new = det.pii.mask(scanned, scan, restorer) if restorer is not None else det.pii.redact(scanned, scan)
        rewritten.append(new + text[len(scanned):])
    return PiiInput(counts, rewritten if changed else None, restorer if restorer is not None and len(restorer) else None)


def _kinds(counts: dict[str, int]) -> str:
    return ", ".join(f"{entity} x{n}" if n > 1 else entity for entity, n in sorted(counts.items()))


async def pii_input(
    det: Detectors, policy: Policy, texts: list[str], tenant: str, scan_upto: list[int] | None = None
) -> tuple[GuardrailResult, Violation | None, PiiInput | None]:
    cfg = policy.pii
    assert cfg is not None
    work = det.pii_jobs.submit(tenant, _pii_input_job, det, policy, texts, scan_upto)
    guarded: Guarded[PiiInput] = await run_guarded(
        det.failures, tenant, "pii", "input", cfg.budget_ms, policy.fail_for(cfg), work
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


async def toxicity(
    det: Detectors, policy: Policy, texts: list[str], stage: Stage, tenant: str
) -> tuple[GuardrailResult, Violation | None]:
    cfg = policy.toxicity
    assert cfg is not None and det.toxicity is not None
    # With no model and a fail-closed fallback the operator has decided: refuse,
    # whatever the policy's own fail mode says.
    fail = "closed" if isinstance(det.toxicity.scorer, UnavailableScorer) else policy.fail_for(cfg)
    guarded: Guarded[list[Scores]] = await run_guarded(
        det.failures, tenant, "toxicity", stage, cfg.budget_ms, fail, det.toxicity.score(texts, tenant)
    )
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


def _injection_job(det: Detectors, texts: list[str]) -> Generator[None, None, tuple[float, dict[str, int]]]:
    top = 0.0
    rules: dict[str, int] = {}
    for i, text in enumerate(texts):
        if i:
            yield
        found = det.injection.score(text)
        top = max(top, found.score)
        for rule in found.rules:
            rules[rule] = rules.get(rule, 0) + 1
    return top, rules


async def injection(
    det: Detectors, policy: Policy, texts: list[str], tenant: str
) -> tuple[GuardrailResult, Violation | None]:
    cfg = policy.injection
    assert cfg is not None
    work = det.injection_jobs.submit(tenant, _injection_job, det, texts)
    guarded: Guarded[tuple[float, dict[str, int]]] = await run_guarded(
        det.failures, tenant, "injection", "input", cfg.budget_ms, policy.fail_for(cfg), work
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


def pii_scan_job(det: Detectors, policy: Policy, text: str) -> Generator[None, None, PiiScan]:
    return (yield from det.pii_steps(policy, text))
