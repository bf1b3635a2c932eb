"""GuardrailEngine: the gateway's one entry point into guardrails.

Built from config, started in the app's lifespan (models load in worker threads),
asked per request for the policy, then for input and output checks. It keeps no
per-request state: what a request needs (the mask Restorer, a stream scanner)
is returned to the caller and dies with the request.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from guardrails import checks
from guardrails.checks import TRUSTED_ROLES, Detectors
from guardrails.config import GuardrailsConfig, PolicyConfig
from guardrails.injection import InjectionDetector
from guardrails.masking import Restorer
from guardrails.pii import PiiDetector, build_recognizers
from guardrails.policy import Policy, policy_version
from guardrails.results import GuardrailResult, InputOutcome, OutputOutcome, Violation
from guardrails.stream import OutputScanner
from guardrails.toxicity import ToxicityBatcher, load_scorer

log = logging.getLogger("sluice.guardrails")


class GuardrailEngine:
    def __init__(self, config: GuardrailsConfig) -> None:
        self.config = config
        self._executor = ThreadPoolExecutor(max_workers=config.threads, thread_name_prefix="sluice-guardrails-pii")
        self._injection_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sluice-guardrails-injection")
        self._detectors = Detectors(
            pii_executor=self._executor, injection_executor=self._injection_executor, injection=InjectionDetector()
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
        loop = asyncio.get_running_loop()
        cfg = self.config
        if cfg.uses_pii():
            self._detectors.pii = await loop.run_in_executor(self._executor, PiiDetector.build, cfg.spacy_model)
        if cfg.uses_toxicity():
            scorer = await loop.run_in_executor(self._executor, load_scorer, cfg)
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
            self._policies[id(policy_cfg)] = await loop.run_in_executor(self._executor, _build_policy, policy_cfg, detectors)
        self._started = True

    async def aclose(self) -> None:
        if self._detectors.toxicity is not None:
            await self._detectors.toxicity.aclose()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._injection_executor.shutdown(wait=False, cancel_futures=True)

    def policy_for(self, tenant: str, public_model: str) -> Policy | None:
        """The policy for this tenant and model; None means no guardrail runs."""
        policy_cfg = self.config.resolve(tenant, public_model)
        if policy_cfg is None or policy_cfg.is_empty():
            return None
        if not self._started:
            raise RuntimeError("GuardrailEngine.start() was not awaited")
        return self._policies[id(policy_cfg)]

    async def check_input(self, policy: Policy, texts: list[str], roles: list[str] | None = None) -> InputOutcome:
        """Run the input guardrails on every text part of a request, concurrently.

        `roles` (optional, parallel to `texts`: "system", "user", "assistant", "tool")
        lets the injection detector skip operator-written system/developer prompts.
        """
        if roles is not None and len(roles) != len(texts):
            raise ValueError("roles must be parallel to texts")
        jobs = []
        if policy.pii is not None and self._detectors.pii is not None:
            jobs.append(checks.pii_input(self._detectors, policy, texts))
        if policy.injection is not None:
            untrusted = [t for i, t in enumerate(texts) if roles is None or roles[i] not in TRUSTED_ROLES]
            jobs.append(checks.injection(self._detectors, policy, untrusted))
        if policy.toxicity is not None and policy.toxicity.on_input and self._detectors.toxicity is not None:
            jobs.append(checks.toxicity(self._detectors, policy, texts, "input"))
        outcome = InputOutcome()
        violations: list[Violation] = []
        for done in await asyncio.gather(*jobs):
            result: GuardrailResult = done[0]
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

    def output_scanner(self, policy: Policy | None, restorer: Restorer | None) -> OutputScanner | None:
        """A scanner for one streamed answer, or None when nothing needs to watch it."""
        has_placeholders = restorer is not None and len(restorer) > 0
        if not has_placeholders and (policy is None or not policy.scans_output()):
            return None
        return OutputScanner(self._detectors, policy or _NO_POLICY, restorer)

    async def check_output(self, policy: Policy | None, text: str, restorer: Restorer | None) -> OutputOutcome:
        """Output guardrails on a whole (non-stream) answer, placeholders restored."""
        scanner = self.output_scanner(policy, restorer)
        if scanner is None:
            return OutputOutcome(text=text)
        step = await scanner.complete(text)
        if step.violation is not None:
            return OutputOutcome(text="", violation=step.violation, results=scanner.results, modified=True)
        return OutputOutcome(text=step.emit, results=scanner.results, modified=scanner.redacted)


_NO_POLICY = Policy(config=PolicyConfig(), version="none")


def _build_policy(policy_cfg: PolicyConfig, detectors: dict[str, str | None]) -> Policy:
    recognizers = build_recognizers(policy_cfg.pii) if policy_cfg.pii is not None else []
    return Policy(config=policy_cfg, version=policy_version(policy_cfg, detectors), pii_recognizers=recognizers)
