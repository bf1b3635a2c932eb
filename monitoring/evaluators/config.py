"""`monitoring.evaluators`: which hallucination evaluators run, on what share of the
traffic, and what they may spend.

    monitoring:
      evaluator_key: ${SLUICE_EVALUATOR_KEY}    # the monitor's own gateway key (re-asks, judge)
      evaluators:
        enabled: true
        gateway_url: http://127.0.0.1:8080      # where re-asks and judge calls go (default below)
        grounding: {sample: {rate: 0.1, models: {gpt-4o: 0.5}}, max_per_minute: 60}
        consistency: {enabled: true, samples: 3, daily_budget_usd: 2.0}
        judge: {enabled: true, model: gpt-4o-mini, rubric: "...", daily_budget_usd: 1.0}
        assertions:
          - {name: short-json, models: [extract], json_schema: {type: object, required: [id]}}

Every evaluator has a `sample` (the share of requests it looks at: a model's rate, else
the tenant's, else `rate`; drawn from a hash of the request id, so a run and its retry
pick the same requests), a `max_per_minute` (evaluation rows it writes in any 60 s), and
the evaluators that call a model a `daily_budget_usd` (UTC day, read back from
`evaluations.cost_usd`; a run stops calling once it is spent, so the overshoot is at most
one evaluation).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from telemetry.pricing import ModelPrice


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SampleConfig(_Strict):
    rate: float = Field(0.05, ge=0, le=1)
    models: dict[str, float] = {}            # public model -> rate (wins over the tenant's)
    tenants: dict[str, float] = {}           # tenant -> rate

    @field_validator("models", "tenants")
    @classmethod
    def _rates(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k, rate in v.items() if not 0 <= rate <= 1]
        if bad:
            raise ValueError(f"rates must be within [0, 1]: {', '.join(bad)}")
        return v


class ContextRule(_Strict):
    """Where a request's grounding context is (evaluators/context.py): tool results, text
    inside these tags, and text after a line that starts with one of these prefixes."""

    tool_results: bool = True
    tags: list[str] = ["context", "document", "documents"]
    line_prefixes: list[str] = ["Context:", "Documents:"]
    roles: list[str] = ["system", "user", "tool"]     # messages searched for tags and prefixes
    min_chars: int = Field(20, ge=0)                   # shorter context: not grounded, not evaluated


class _Evaluator(_Strict):
    enabled: bool = True
    sample: SampleConfig = SampleConfig()
    max_per_minute: int = Field(60, ge=0)


class GroundingConfig(_Evaluator):
    # embedding: the local MiniLM + lexical checks (offline, milliseconds); nli: a
    # cross-encoder (HHEM-class) loaded from `model`, a local path or a hub id.
    backend: Literal["embedding", "nli"] = "embedding"
    model: str | None = None                  # nli: path or hub id
    runtime: Literal["transformers", "onnxruntime"] = "transformers"
    entailment_label: str | None = None       # nli: the label meaning "supported" (default: from the config)
    trust_remote_code: bool = False           # nli: models with their own code (HHEM-2.1-Open)
    threshold: float = Field(0.5, ge=0, le=1)  # a sentence scoring below it is unsupported
    context: ContextRule = ContextRule()

    @model_validator(mode="after")
    def _nli_model(self) -> GroundingConfig:
        if self.enabled and self.backend == "nli" and not self.model:
            raise ValueError("backend nli needs `model` (a local path or a hub id)")
        return self


class _ModelCalling(_Evaluator):
    enabled: bool = False
    max_per_minute: int = Field(10, ge=0)
    daily_budget_usd: float = Field(1.0, ge=0)
    timeout_s: float = Field(60.0, gt=0)


class ConsistencyConfig(_ModelCalling):
    """SelfCheckGPT-style: the request asked again `samples` times; each sentence of the
    original answer scored by its agreement with the samples."""

    samples: int = Field(3, ge=1, le=20)
    temperature: float = Field(1.0, ge=0, le=2)
    backend: Literal["embedding", "nli"] = "embedding"
    model: str | None = None                  # nli: path or hub id
    runtime: Literal["transformers", "onnxruntime"] = "transformers"
    entailment_label: str | None = None
    trust_remote_code: bool = False
    threshold: float = Field(0.5, ge=0, le=1)

    @model_validator(mode="after")
    def _nli_model(self) -> ConsistencyConfig:
        if self.enabled and self.backend == "nli" and not self.model:
            raise ValueError("backend nli needs `model` (a local path or a hub id)")
        return self


class JudgeConfig(_ModelCalling):
    model: str = ""                           # a public model of this gateway, pinned (a dated snapshot)
    rubric: str = ("Is the answer correct, complete and supported by the conversation? "
                   "Penalise invented facts.")
    mode: Literal["single", "pairwise"] = "single"
    reference_model: str | None = None        # pairwise: the answer compared with (asked now)
    temperature: float = Field(0.0, ge=0, le=2)
    max_tokens: int = Field(400, ge=16)

    @model_validator(mode="after")
    def _models(self) -> JudgeConfig:
        if self.enabled and not self.model:
            raise ValueError("judge needs `model`")
        if self.enabled and self.mode == "pairwise" and not self.reference_model:
            raise ValueError("pairwise mode needs `reference_model`")
        return self


class AssertionConfig(_Strict):
    """Deterministic checks of every answer of the models / prompt fingerprints named
    (none named: all). Regex and lengths run in ClickHouse; JSON schema and language here."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    models: list[str] = []
    prompt_fingerprints: list[str] = []
    regex: str | None = None                  # must match (re2 syntax, ClickHouse `match`)
    forbid_regex: str | None = None           # must not match
    min_chars: int | None = Field(None, ge=0)
    max_chars: int | None = Field(None, ge=0)
    json_schema: dict[str, Any] | None = None
    language: str | None = None               # ISO 639-1 (monitoring/language.py)
    sample: SampleConfig = SampleConfig(rate=1.0)
    max_per_minute: int = Field(10_000, ge=0)

    @field_validator("json_schema")
    @classmethod
    def _valid_schema(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            from jsonschema import Draft202012Validator
            from jsonschema.exceptions import SchemaError
            try:
                Draft202012Validator.check_schema(v)
            except SchemaError as exc:
                raise ValueError(f"not a valid JSON schema: {exc.message}") from None
        return v


DEFAULT_GATEWAY_URL = "http://127.0.0.1:8080"


def checked_gateway_url(url: str) -> str:
    """A gateway URL as the evaluators use it (config, or $SLUICE_GATEWAY_URL): http(s), no
    trailing slash."""
    if not url.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return url.rstrip("/")


def local_gateway_url(host: str, port: int) -> str:
    """The URL this host reaches a gateway serving on host:port by (a wildcard bind is
    reached on loopback)."""
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


class EvaluatorsConfig(_Strict):
    enabled: bool = False
    # Where re-asks and judge calls go. Unset: the serving gateway itself when the monitor runs
    # inside `sluice serve` (its --host/--port), else http://127.0.0.1:8080 (`local_gateway_url`).
    gateway_url: str | None = None
    lookback_s: float = Field(3600.0, gt=0)   # requests older than this are never evaluated
    settle_s: float = Field(5.0, ge=0)        # ... nor younger (their rows may still be arriving)
    max_per_run: int = Field(500, ge=1)       # candidate requests read per evaluator and run
    prices: dict[str, ModelPrice] = {}        # USD per 1M tokens of the judge / re-asked models
    grounding: GroundingConfig = GroundingConfig()
    consistency: ConsistencyConfig = ConsistencyConfig()
    judge: JudgeConfig = JudgeConfig()
    assertions: list[AssertionConfig] = []

    @field_validator("gateway_url")
    @classmethod
    def _http(cls, v: str | None) -> str | None:
        return checked_gateway_url(v) if v is not None else None

    @property
    def resolved_gateway_url(self) -> str:
        return self.gateway_url or DEFAULT_GATEWAY_URL

    @field_validator("assertions")
    @classmethod
    def _distinct(cls, v: list[AssertionConfig]) -> list[AssertionConfig]:
        names = [a.name for a in v]
        if len(set(names)) != len(names):
            raise ValueError("two assertions share a name")
        return v


def evaluator_id(name: str, settings: BaseModel, *, ignore: tuple[str, ...] = ()) -> str:
    """16 hex of the settings that change what a score means (for the judge: the pinned
    model, the rubric and the sampling parameters); sampling rates and caps are left out:
    they change which requests are scored, not how."""
    skip = {"enabled", "sample", "max_per_minute", "daily_budget_usd", "timeout_s", *ignore}
    payload = {k: v for k, v in settings.model_dump(mode="json").items() if k not in skip}
    digest = hashlib.sha256(json.dumps([name, payload], sort_keys=True).encode()).hexdigest()
    return digest[:16]
