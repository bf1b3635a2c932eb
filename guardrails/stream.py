"""Output guardrails on a stream, with a bounded hold-back window.

Text is released as soon as nothing later could change it:
- placeholders only (mask-and-restore): hold back a tail that could be the start of
  one of this request's placeholders (at most the longest placeholder);
- output PII: hold back `stream_window_chars` (a PII value split across chunks is
  seen whole before any of it leaves) and release in steps of at least STEP chars,
  never cutting inside a word, a placeholder or a detected entity;
- output toxicity: release whole sentences (or MAX_SENTENCE chars), each scored with
  the preceding released text as context before it leaves.
The scan runs on the provider's text (placeholders still in), so values restored
from the caller's own input are never redacted as output PII.
"""

from __future__ import annotations

import re

from guardrails import checks
from guardrails.checks import Detectors
from guardrails.masking import Restorer
from guardrails.pii import PiiScan
from guardrails.policy import Policy
from guardrails.results import GuardrailResult, ScanStep, Violation
from guardrails.runner import run_guarded

STEP = 16
MAX_SENTENCE = 400
TOXICITY_CONTEXT = 300
_SENTENCE_END = re.compile(r"[.!?\n][\"')\]]*(?=\s|$)")
_RANK = {"pass": 0, "flag": 1, "mask": 2, "redact": 3, "error": 4, "block": 5}


class OutputScanner:
    """Feed it the provider's deltas; send what it emits; stop on a violation."""

    def __init__(self, detectors: Detectors, policy: Policy, restorer: Restorer | None, tenant: str = "") -> None:
        self._det = detectors
        self._policy = policy
        self._tenant = tenant
        self._restorer = restorer if restorer is not None and len(restorer) else None
        pii = policy.pii
        tox = policy.toxicity
        self._pii_on = pii is not None and pii.output_action != "off" and detectors.pii is not None
        self._tox_on = tox is not None and tox.on_output and detectors.toxicity is not None
        self._window = pii.stream_window_chars if self._pii_on and pii is not None else 0
        self._pending = ""  # provider text not yet released (placeholders unrestored)
        self._context = ""  # tail of released provider text, context for toxicity
        self._done = False
        self._merged: dict[str, GuardrailResult] = {}
        self.redacted = False

    @property
    def results(self) -> list[GuardrailResult]:
        return list(self._merged.values())

    async def feed(self, delta: str) -> ScanStep:
        if self._done or not delta:
            return ScanStep("")
        self._pending += delta
        return await self._release(final=False)

    async def finish(self) -> ScanStep:
        if self._done:
            return ScanStep("")
        step = await self._release(final=True)
        self._done = True
        return step

    async def complete(self, text: str) -> ScanStep:
        """A whole (non-stream) answer: one scan per guardrail."""
        self._pending = text
        return await self.finish()

    async def _release(self, final: bool) -> ScanStep:
        text = self._pending
        cut = len(text) if final else self._candidate_cut(text)
        if cut <= 0:
            return ScanStep("")
        released = text[:cut]
        if self._pii_on:
            scan, violation = await self._scan_pii(text)
            if violation is not None:
                return self._stop(violation)
            if scan is not None:
                # Never release part of an entity that runs past the cut.
                for finding in scan.findings:
                    if finding.start < cut < finding.end:
                        cut = finding.start
                inside = PiiScan([f for f in scan.findings if f.end <= cut])
                if inside.findings:
                    violation = self._pii_found(inside)
                    if violation is not None:
                        return self._stop(violation)
                released = text[:cut]
                if inside.findings:
                    assert self._det.pii is not None
                    released = self._det.pii.redact(released, inside)
                    self.redacted = True
            if cut <= 0:
                return ScanStep("")
        if self._tox_on and released.strip():
            violation = await self._score_toxicity(self._context[-TOXICITY_CONTEXT:] + released)
            if violation is not None:
                return self._stop(violation)
        self._pending = text[cut:]
        self._context = (self._context + released)[-TOXICITY_CONTEXT:]
        return ScanStep(self._restorer.restore(released) if self._restorer else released)

    def _candidate_cut(self, text: str) -> int:
        cut = len(text)
        if self._pii_on:
            cut = len(text) - self._window
            if cut < STEP:
                return 0
            space = max(text.rfind(" ", 0, cut), text.rfind("\n", 0, cut))
            if space > 0:
                cut = space + 1
        if self._tox_on:
            ends = [m.end() for m in _SENTENCE_END.finditer(text, 0, cut)]
            if ends:
                cut = ends[-1]
            elif cut < MAX_SENTENCE:
                return 0
        if self._restorer is not None:
            cut = self._restorer.holdback_start(text[:cut])
        return cut

    async def _scan_pii(self, text: str) -> tuple[PiiScan | None, Violation | None]:
        cfg = self._policy.pii
        assert cfg is not None
        work = self._det.pii_jobs.submit(self._tenant, checks.pii_scan_job, self._det, self._policy, text)
        guarded = await run_guarded(
            self._det.failures, self._tenant, "pii", "output", cfg.budget_ms, self._policy.fail_for(cfg), work
        )
        if guarded.error_result is not None:
            self._record(guarded.error_result)
            if guarded.violation is None:
                # Failed open: the rest of this answer passes unscanned too. Scanning the
                # next window would wait the whole budget again, once per window, holding
                # the stream back for nothing the policy would act on.
                self._pii_on, self._window = False, 0
            return None, guarded.violation
        self._record(GuardrailResult("pii", "output", "pass", latency_ms=guarded.latency_ms))
        return guarded.value, None

    def _pii_found(self, scan: PiiScan) -> Violation | None:
        cfg = self._policy.pii
        assert cfg is not None
        action = "block" if cfg.output_action == "block" else "redact"
        self._record(GuardrailResult("pii", "output", action, entity_counts=scan.counts()))
        if action != "block":
            return None
        counts = scan.counts()
        return Violation(
            guardrail="pii",
            stage="output",
            code="pii_detected",
            message=f"the response contains personal data this policy does not allow: {', '.join(sorted(counts))}",
            kinds=tuple(sorted(counts)),
        )

    async def _score_toxicity(self, text: str) -> Violation | None:
        result, violation = await checks.toxicity(self._det, self._policy, [text], "output", self._tenant)
        self._record(result)
        if result.action == "error" and violation is None:
            self._tox_on = False            # failed open: once per answer, as for PII above
        return violation

    def _stop(self, violation: Violation) -> ScanStep:
        self._done = True
        self._pending = ""
        return ScanStep("", violation)

    def _record(self, result: GuardrailResult) -> None:
        """Fold a window's result into one result per guardrail for the whole answer."""
        current = self._merged.get(result.name)
        if current is None:
            self._merged[result.name] = result
            return
        for entity, n in result.entity_counts.items():
            current.entity_counts[entity] = current.entity_counts.get(entity, 0) + n
        for category, value in result.scores.items():
            current.scores[category] = max(value, current.scores.get(category, 0.0))
        current.latency_ms = round(current.latency_ms + result.latency_ms, 3)
        if _RANK[result.action] > _RANK[current.action]:
            current.action = result.action
            current.reason = result.reason
        if result.error is not None:
            current.error = result.error
