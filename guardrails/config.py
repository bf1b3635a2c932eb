"""The `guardrails:` section of sluice.yaml.

Precedence (``GuardrailsConfig.resolve``): a tenant's policy wins over a public
model's policy, which wins over ``default``. The policy that matches is used whole;
policies are never merged key by key, so what a tenant gets is exactly what its
entry says. A policy with no guardrail in it means "no guardrails" for that match.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

FailMode = Literal["open", "closed"]
# What happens to a request with more text than `max_scan_chars`: refused (413), its
# first `max_scan_chars` characters scanned and the rest passed on unscanned, or
# treated as a guardrail failure (the policy's `fail`: open passes it unscanned,
# closed refuses it with 413).
Overflow = Literal["block", "scan_prefix", "fail"]

# Detoxify's six categories (names after Detoxify's own renaming of the Jigsaw labels).
TOXICITY_CATEGORIES: tuple[str, ...] = (
    "toxicity",
    "severe_toxicity",
    "obscene",
    "threat",
    "insult",
    "identity_attack",
)

# Pattern recognizers that work offline with no NER model and rarely fire on ordinary
# prose. URL, UK_NHS and US_DRIVER_LICENSE are left out on purpose: they match parts of
# e-mail addresses and plain phone numbers.
DEFAULT_PII_ENTITIES: tuple[str, ...] = (
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "IBAN_CODE",
    "IP_ADDRESS",
    "US_SSN",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GuardBudget(_Strict):
    """Time budget and failure handling shared by every guardrail."""

    budget_ms: float = Field(default=250.0, gt=0)
    # None -> the policy's `fail`.
    fail: FailMode | None = None


class PatternConfig(_Strict):
    regex: str
    score: float = Field(default=0.5, ge=0, le=1)
    name: str | None = None

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regex: {exc}") from exc
        return value


class CustomRecognizerConfig(_Strict):
    """A regex recognizer; context words raise the score when they appear nearby."""

    entity: str = Field(pattern=r"^[A-Z][A-Z0-9_]*$")
    patterns: list[PatternConfig] = Field(min_length=1)
    context: list[str] = []


class DenyListConfig(_Strict):
    """Exact words or phrases that are always this entity (code names, project names)."""

    entity: str = Field(pattern=r"^[A-Z][A-Z0-9_]*$")
    words: list[str] = Field(min_length=1)


class PiiConfig(GuardBudget):
    entities: list[str] = list(DEFAULT_PII_ENTITIES)
    # Presidio scores a bare phone number 0.4 (higher with context words nearby).
    score_threshold: float = Field(default=0.4, ge=0, le=1)
    input_action: Literal["block", "redact", "mask"] = "mask"
    output_action: Literal["off", "redact", "block"] = "redact"
    recognizers: list[CustomRecognizerConfig] = []
    deny_lists: list[DenyListConfig] = []
    # Characters held back while streaming so a PII value split across chunks is still
    # seen whole: about the longest value the configured patterns match.
    stream_window_chars: int = Field(default=48, ge=8, le=1024)

    def all_entities(self) -> list[str]:
        extra = [r.entity for r in self.recognizers] + [d.entity for d in self.deny_lists]
        return list(dict.fromkeys([*self.entities, *extra]))


class ToxicityConfig(GuardBudget):
    # A category absent from `thresholds` is never acted on.
    thresholds: dict[str, float] = {"toxicity": 0.8, "severe_toxicity": 0.5, "threat": 0.7}
    action: Literal["block", "flag"] = "block"
    on_input: bool = True
    on_output: bool = True
    budget_ms: float = Field(default=1000.0, gt=0)

    @field_validator("thresholds")
    @classmethod
    def _known_categories(cls, value: dict[str, float]) -> dict[str, float]:
        for name, threshold in value.items():
            if name not in TOXICITY_CATEGORIES:
                raise ValueError(f"unknown toxicity category {name!r}; expected one of {TOXICITY_CATEGORIES}")
            if not 0 <= threshold <= 1:
                raise ValueError(f"threshold for {name!r} must be within [0, 1]")
        return value


class InjectionConfig(GuardBudget):
    threshold: float = Field(default=0.5, ge=0, le=1)
    action: Literal["block", "flag"] = "block"


class PolicyConfig(_Strict):
    pii: PiiConfig | None = None
    toxicity: ToxicityConfig | None = None
    injection: InjectionConfig | None = None
    # What a guardrail error or timeout means when the guardrail does not say.
    fail: FailMode = "closed"
    # Over how much request text this policy scans, and what it does with more;
    # None -> the `guardrails:` section's values.
    max_scan_chars: int | None = Field(default=None, ge=1)
    overflow: Overflow | None = None

    def is_empty(self) -> bool:
        return self.pii is None and self.toxicity is None and self.injection is None


class GuardrailsConfig(_Strict):
    default: PolicyConfig | None = None
    tenants: dict[str, PolicyConfig] = {}
    models: dict[str, PolicyConfig] = {}
    # None -> pattern recognizers only (a blank spaCy pipeline); else a spaCy package
    # name or path, which adds NER entities such as PERSON and LOCATION.
    spacy_model: str | None = None
    toxicity_model: Literal["original", "unbiased", "multilingual"] | None = "original"
    # None: no Detoxify weights, the light classifier (toxicity_fallback: light) at once.
    # A local Detoxify checkpoint; wins over `toxicity_model` (which downloads).
    toxicity_checkpoint: Path | None = None
    # Directory with the Hugging Face config + tokenizer files for offline loading.
    toxicity_config_dir: Path | None = None
    # What toxicity checks do when the weights cannot be loaded.
    toxicity_fallback: Literal["light", "fail-closed"] = "light"
    # Texts scored together by one model call when requests arrive together.
    toxicity_max_batch: int = Field(default=16, ge=1, le=256)
    # Worker threads for Presidio (the injection detector and the toxicity model
    # have one thread each).
    threads: int = Field(default=2, ge=1, le=32)
    # Characters of request text (all parts together) the guardrails scan; a policy
    # may set its own. Presidio needs 1 to 2.5 ms per 1,000 characters of ordinary
    # text here, so 100,000 is about what fits the default 250 ms budget.
    max_scan_chars: int = Field(default=100_000, ge=1)
    overflow: Overflow = "block"
    # Presidio's cost grows with (values x tokens) in one call: texts are analysed in
    # chunks of this many characters (cut at whitespace), consecutive chunks
    # overlapping by `chunk_overlap_chars`, so a value up to half the overlap long is
    # always seen whole, with half the overlap of context before it. Between chunks a
    # scan gives way to other tenants and stops if its request stopped waiting.
    chunk_chars: int = Field(default=2_000, ge=200, le=100_000)
    chunk_overlap_chars: int = Field(default=200, ge=0)
    # Guardrail jobs (per guardrail) one tenant may have queued or running; more are
    # refused at once and follow the guardrail's fail policy.
    tenant_max_in_flight: int = Field(default=16, ge=1, le=100_000)

    @model_validator(mode="after")
    def _config_dir_needs_checkpoint(self) -> GuardrailsConfig:
        # Loading problems are reported by GuardrailEngine.start(), which knows the
        # fallback; the config only rejects what can never work.
        if self.toxicity_config_dir is not None and self.toxicity_checkpoint is None:
            raise ValueError("toxicity_config_dir needs toxicity_checkpoint")
        return self

    @model_validator(mode="after")
    def _overlap_fits_the_chunk(self) -> GuardrailsConfig:
        # A chunk may end half-way (at a whitespace) and the next starts the overlap
        # before that: it must still be well ahead of this chunk's start.
        if self.chunk_overlap_chars * 4 > self.chunk_chars:
            raise ValueError("chunk_overlap_chars must be at most a quarter of chunk_chars")
        return self

    def resolve(self, tenant: str, public_model: str) -> PolicyConfig | None:
        """The policy for a request: tenant, else public model, else default."""
        if tenant in self.tenants:
            return self.tenants[tenant]
        if public_model in self.models:
            return self.models[public_model]
        return self.default

    def any_policy(self) -> bool:
        """Whether any request could meet a guardrail (else the engine is not even built)."""
        policies = [self.default, *self.tenants.values(), *self.models.values()]
        return any(p is not None and not p.is_empty() for p in policies)

    def uses_toxicity(self) -> bool:
        policies = [self.default, *self.tenants.values(), *self.models.values()]
        return any(p is not None and p.toxicity is not None for p in policies)

    def uses_pii(self) -> bool:
        policies = [self.default, *self.tenants.values(), *self.models.values()]
        return any(p is not None and p.pii is not None for p in policies)
