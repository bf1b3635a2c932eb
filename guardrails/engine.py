"""GuardrailEngine: the gateway's one entry point into guardrails.

Built from config, started in the app's lifespan (models load in worker threads),
asked per request for the policy, then for input and output checks. It keeps no
per-request state: what a request needs (the mask Restorer, a stream scanner)
is returned to the caller and dies with the request.

Work per request is bounded: at most `max_scan_chars` of request text is scanned
(the `overflow` policy says what happens to more), long texts are scanned in
chunks, a scan stops at its next chunk once its request stopped waiting, and
tenants share the guardrail threads in turns, each with an in-flight cap.
"""

from __future__ import annotations

import asyncio
import logging

from guardrails import checks
from guardrails.checks import TRUSTED_ROLES, Detectors
from guardrails.chunking import prefix_lengths
from guardrails.config import GuardBudget, GuardrailsConfig, PolicyConfig
from guardrails.failure_log import FailureLog
from guardrails.injection import InjectionDetector
from guardrails.masking import Restorer
from guardrails.pii import PiiDetector, build_recognizers
from guardrails.policy import Policy, policy_version
from guardrails.results import STATUS_SCAN_LIMIT, GuardrailName, GuardrailResult, InputOutcome, OutputOutcome, Violation
from guardrails.scheduler import FairScheduler
from guardrails.stream import OutputScanner
from guardrails.toxicity import ToxicityBatcher, load_scorer

log = logging.getLogger("sluice.guardrails")


class GuardrailEngine:
    def __init__(self, config: GuardrailsConfig) -> None:
        self.config = config
        cap = config.tenant_max_in_flight
        self._detectors = Detectors(
            pii_jobs=FairScheduler(config.threads, cap, "sluice-guardrails-pii"),
            injection_jobs=FairScheduler(1, cap, "sluice-guardrails-injection"),
            injection=InjectionDetector(),
            chunk_chars=config.chunk_chars,
            chunk_overlap_chars=config.chunk_overlap_chars,
            failures=FailureLog(),
        )
        # id(PolicyConfig) -> Policy; PolicyConfig objects live as long as the config.
        self._policies: dict[int, Policy] = {}
        self._started = False

    @classmethod
    def from_config(cls, cfg: GuardrailsConfig) -> GuardrailEngine:
        return cls(cfg)

    @property
    def toxicity_backend(self) -> str | None:
        """Which scorer is in use ("detoxify:...", "light", "unavailable"), for start-up logs and /health."""
        tox = self._detectors.toxicity
        return tox.scorer.name if tox is not None else None

    async def start(self) -> None:
        """Load Presidio and Detoxify in worker threads; build every configured policy."""
        cfg = self.config
        if cfg.uses_pii():
            self._detectors.pii = await asyncio.to_thread(PiiDetector.build, cfg.spacy_model)
        if cfg.uses_toxicity():
            scorer = await asyncio.to_thread(load_scorer, cfg)
            batcher = ToxicityBatcher(scorer, cfg.toxicity_max_batch)
            batcher.start()
            self._detectors.toxicity = batcher
        detectors = {
            "spacy_model": cfg.spacy_model,
            "toxicity": self.toxicity_backend,
        }
        for policy_cfg in [cfg.default, *cfg.tenants.values(), *cfg.models.values()]:
            if policy_cfg is None or policy_cfg.is_empty() or id(policy_cfg) in self._policies:
                continue
            self._policies[id(policy_cfg)] = await asyncio.to_thread(_build_policy, policy_cfg, cfg, detectors)
        self._started = True

    async def aclose(self) -> None:
        if self._detectors.toxicity is not None:
            await self._detectors.toxicity.aclose()
        self._detectors.pii_jobs.shutdown()
        self._detectors.injection_jobs.shutdown()

    def policy_for(self, tenant: str, public_model: str) -> Policy | None:
        """The policy for this tenant and model; None means no guardrail runs."""
        policy_cfg = self.config.resolve(tenant, public_model)
        if policy_cfg is None or policy_cfg.is_empty():
            return None
        if not self._started:
            raise RuntimeError("GuardrailEngine.start() was not awaited")
        return self._policies[id(policy_cfg)]

    async def check_input(
        self, policy: Policy, texts: list[str], roles: list[str] | None = None, tenant: str = ""
    ) -> InputOutcome:
        """Run the input guardrails on every text part of a request, concurrently.

        `roles` (optional, parallel to `texts`: "system", "user", "assistant", "tool")
        lets the injection detector skip operator-written system/developer prompts.
        `tenant` names whose share of the guardrail threads the work uses.
        """
        if roles is not None and len(roles) != len(texts):
            raise ValueError("roles must be parallel to texts")
        det = self._detectors
        guards = self._input_guards(policy)
        total = sum(len(t) for t in texts)
        scan_upto: list[int] | None = None
        if total > policy.max_scan_chars and guards:
            if policy.overflow != "scan_prefix":
                return self._oversize(policy, guards, total, tenant)
            scan_upto = prefix_lengths(texts, policy.max_scan_chars)
            self._report_overflow(policy, tenant, total, "only the first max_scan_chars characters were scanned")
        scanned = texts if scan_upto is None else [t[:n] for t, n in zip(texts, scan_upto)]
        jobs = []
        if "pii" in guards:
            jobs.append(checks.pii_input(det, policy, texts, tenant, scan_upto))
        if "injection" in guards:
            untrusted = [t for i, t in enumerate(scanned) if roles is None or roles[i] not in TRUSTED_ROLES]
            jobs.append(checks.injection(det, policy, untrusted, tenant))
        if "toxicity" in guards:
            jobs.append(checks.toxicity(det, policy, scanned, "input", tenant))
        outcome = InputOutcome()
        violations: list[Violation] = []
        for done in await asyncio.gather(*jobs):
            result: GuardrailResult = done[0]
            if scan_upto is not None and result.reason is None:
                result.reason = "prefix"
            outcome.results.append(result)
            if done[1] is not None:
                violations.append(done[1])
            if result.name == "pii" and len(done) == 3 and done[2] is not None:
                outcome.texts = done[2].texts
                outcome.restorer = done[2].restorer
        if violations:
            # Content violations (400) before unavailable guardrails (503): tell the
            # caller what is wrong with the request when we know it.
            violations.sort(key=lambda v: v.status)
            outcome.violation = violations[0]
            outcome.texts = None
            outcome.restorer = None
        return outcome

    def _input_guards(self, policy: Policy) -> dict[GuardrailName, GuardBudget]:
        """The guardrails that scan this policy's input, in the order results are listed."""
        det = self._detectors
        guards: dict[GuardrailName, GuardBudget] = {}
        if policy.pii is not None and det.pii is not None:
            guards["pii"] = policy.pii
        if policy.injection is not None:
            guards["injection"] = policy.injection
        if policy.toxicity is not None and policy.toxicity.on_input and det.toxicity is not None:
            guards["toxicity"] = policy.toxicity
        return guards

    def _oversize(self, policy: Policy, guards: dict[GuardrailName, GuardBudget], total: int,
                  tenant: str) -> InputOutcome:
        """More text than max_scan_chars, with overflow `block` or `fail`: nothing is
        scanned. Refused (413), except guardrails that fail open under `fail`."""
        outcome = InputOutcome()
        refused: list[GuardrailName] = []
        for name, guard in guards.items():
            if policy.overflow == "fail" and policy.fail_for(guard) == "open":
                outcome.results.append(GuardrailResult(
                    name, "input", "error", reason="oversize",
                    error=f"oversize: {total} characters to scan, max_scan_chars is {policy.max_scan_chars}"))
            else:
                refused.append(name)
                outcome.results.append(GuardrailResult(name, "input", "block", reason="oversize"))
        if refused:
            outcome.violation = Violation(
                guardrail=refused[0],
                stage="input",
                code="guardrail_scan_limit",
                message=(f"the request has {total:,} characters of text and its guardrail policy scans at most "
                         f"{policy.max_scan_chars:,} (guardrails max_scan_chars, overflow: {policy.overflow}); "
                         f"send less text or ask the operator for a higher limit"),
                status=STATUS_SCAN_LIMIT,
            )
            what = "refused with 413"
        else:
            what = "passed unscanned (overflow: fail, the policy fails open)"
        self._report_overflow(policy, tenant, total, what)
        return outcome

    def _report_overflow(self, policy: Policy, tenant: str, total: int, what: str) -> None:
        self._detectors.failures.report(
            (tenant, "scan_limit", policy.overflow),
            f"a request of tenant {tenant!r} has {total:,} characters of text, over max_scan_chars "
            f"{policy.max_scan_chars:,} (overflow: {policy.overflow}): {what}",
        )

    def output_scanner(self, policy: Policy | None, restorer: Restorer | None, tenant: str = "") -> OutputScanner | None:
        """A scanner for one streamed answer, or None when nothing needs to watch it."""
        has_placeholders = restorer is not None and len(restorer) > 0
        if not has_placeholders and (policy is None or not policy.scans_output()):
            return None
        return OutputScanner(self._detectors, policy or _NO_POLICY, restorer, tenant)

    async def check_output(
        self, policy: Policy | None, text: str, restorer: Restorer | None, tenant: str = ""
    ) -> OutputOutcome:
        """Output guardrails on a whole (non-stream) answer, placeholders restored."""
        scanner = self.output_scanner(policy, restorer, tenant)
        if scanner is None:
            return OutputOutcome(text=text)
        step = await scanner.complete(text)
        if step.violation is not None:
            return OutputOutcome(text="", violation=step.violation, results=scanner.results, modified=True)
        return OutputOutcome(text=step.emit, results=scanner.results, modified=scanner.redacted)


_NO_POLICY = Policy(config=PolicyConfig(), version="none")


def _build_policy(policy_cfg: PolicyConfig, cfg: GuardrailsConfig, detectors: dict[str, str | None]) -> Policy:
    recognizers = build_recognizers(policy_cfg.pii) if policy_cfg.pii is not None else []
    max_scan_chars = policy_cfg.max_scan_chars or cfg.max_scan_chars
    overflow = policy_cfg.overflow or cfg.overflow
    # The limits decide what the provider sees (scan_prefix) or whether it sees anything.
    version = policy_version(policy_cfg, {**detectors, "max_scan_chars": str(max_scan_chars), "overflow": overflow})
    return Policy(config=policy_cfg, version=version, pii_recognizers=recognizers,
                  max_scan_chars=max_scan_chars, overflow=overflow)
