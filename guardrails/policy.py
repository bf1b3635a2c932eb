"""The effective policy for a request, with what it needs precompiled.

`Policy.version` is a stable hash of everything that decides what the provider sees
and what the caller gets back; the cache partitions entries by it, so changing a
threshold or action never serves an answer produced under the old policy.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from guardrails.config import FailMode, GuardBudget, InjectionConfig, Overflow, PiiConfig, PolicyConfig, ToxicityConfig


@dataclass(frozen=True, slots=True)
class Policy:
    config: PolicyConfig
    version: str
    # Presidio recognizers built from the policy's custom recognizers and deny lists.
    pii_recognizers: list[Any] = field(default_factory=list)
    # The policy's own values, else those of the `guardrails:` section.
    max_scan_chars: int = 100_000
    overflow: Overflow = "block"

    @property
    def pii(self) -> PiiConfig | None:
        return self.config.pii

    @property
    def toxicity(self) -> ToxicityConfig | None:
        return self.config.toxicity

    @property
    def injection(self) -> InjectionConfig | None:
        return self.config.injection

    def fail_for(self, guard: GuardBudget) -> FailMode:
        return guard.fail or self.config.fail

    def scans_output(self) -> bool:
        pii_out = self.config.pii is not None and self.config.pii.output_action != "off"
        tox_out = self.config.toxicity is not None and self.config.toxicity.on_output
        return pii_out or tox_out


def policy_version(config: PolicyConfig, detectors: dict[str, str | None]) -> str:
    """Hash of the policy plus the detectors behind it (spaCy model, toxicity model)."""
    payload = {"policy": config.model_dump(mode="json"), "detectors": detectors}
    digest = hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return digest[:16]
