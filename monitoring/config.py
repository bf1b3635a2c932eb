"""The `monitoring:` section of `sluice.yaml`: the drift monitor's windows, gates and thresholds.

One typed object; unknown keys are rejected so a typo fails at start-up with the key path.
Every metric has a default (`DEFAULT_METRICS`, justified in docs/monitoring.md, "Drift");
`metrics:` in the YAML overrides only the keys it names, per metric:

    monitoring:
      window_s: 3600
      metrics:
        latency_p95_ms: {threshold: 1.0, min_delta: 500}   # alert on +100% and at least +500 ms
        prompt_embedding_auc: {enabled: false}

Two kinds of metric (`METRIC_KINDS`):
- `statistic`: the value is itself a distance between current and baseline (AUC, MMD, PSI,
  Jensen-Shannon); it crosses when `value > threshold`.
- `change`: the value is a rate, a quantile or a mean of the current window, compared with
  the baseline's: it crosses when it moved in `direction` by more than
  `max(threshold * |baseline|, min_delta)` (relative change with an absolute floor, so a
  0.1% -> 0.3% error rate, +200%, does not page anyone).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from monitoring.evaluators.config import EvaluatorsConfig

Direction = Literal["up", "down", "both"]
MetricKind = Literal["statistic", "change"]
SegmentDimension = Literal["public_model", "deployment", "tenant", "prompt_fingerprint"]
SEGMENT_DIMENSIONS: tuple[SegmentDimension, ...] = ("public_model", "deployment", "tenant", "prompt_fingerprint")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MetricSettings(_Strict):
    """How one metric is computed and when it crosses its threshold."""

    enabled: bool = True
    method: str                                # written to drift_metrics.method
    threshold: float = Field(ge=0)
    min_delta: float = Field(0.0, ge=0)         # change metrics: the absolute floor of a crossing
    direction: Direction = "up"
    # The value must also stand this many standard errors above what sampling noise alone
    # gives at the window's sample sizes (rates: two-proportion z; AUC: its null spread;
    # PSI and JS: their chi-square nulls; MMD: permutations), so a small window's noise
    # does not cross a threshold chosen for large ones (measures.py). 0: off.
    min_z: float = Field(0.0, ge=0)


class MetricOverride(_Strict):
    """A partial MetricSettings: only the keys that differ from the default."""

    enabled: bool | None = None
    method: str | None = None
    threshold: float | None = Field(None, ge=0)
    min_delta: float | None = Field(None, ge=0)
    direction: Direction | None = None
    min_z: float | None = Field(None, ge=0)


def _statistic(method: str, threshold: float, enabled: bool = True) -> MetricSettings:
    return MetricSettings(method=method, threshold=threshold, min_z=3.0, enabled=enabled)


def _change(method: str, threshold: float, min_delta: float, direction: Direction = "up") -> MetricSettings:
    min_z = 3.0 if method == "rate_change" else 0.0
    return MetricSettings(method=method, threshold=threshold, min_delta=min_delta, direction=direction, min_z=min_z)


# The metric names are fixed (dashboards read them). Thresholds: docs/monitoring.md, "Drift".
DEFAULT_METRICS: dict[str, MetricSettings] = {
    # Evidently's default for its classifier test: ROC-AUC 0.55 of current vs baseline.
    "prompt_embedding_auc": _statistic("classifier_auc", 0.55),
    # Squared MMD, RBF kernel at the median heuristic; ~0 for one population (statistics.py).
    "prompt_embedding_mmd": _statistic("mmd_rbf", 0.02),
    # PSI: < 0.1 stable, 0.1-0.2 moderate, > 0.2 a shift (the credit-scoring convention).
    "prompt_tokens_psi": _statistic("psi_baseline_deciles", 0.2),
    "completion_tokens_psi": _statistic("psi_baseline_deciles", 0.2),
    "refusal_rate": _change("rate_change", 1.0, 0.05),
    # Jensen-Shannon distance (base 2, 0..1) of the finish-reason / language mixes: rare
    # categories swing a lot at 100 a side (q95 0.15 with no shift), hence 0.2.
    "finish_reason_js": _statistic("jensen_shannon", 0.2),
    "empty_answer_rate": _change("rate_change", 1.0, 0.05),
    "json_valid_rate": _change("rate_change", 0.05, 0.05, "down"),
    "language_js": _statistic("jensen_shannon", 0.2),
    "prompt_language_js": _statistic("jensen_shannon", 0.2, enabled=False),   # users' languages: opt in (cost)
    "error_rate": _change("rate_change", 1.0, 0.02),
    "latency_p50_ms": _change("quantile_change", 0.5, 50.0),
    "latency_p95_ms": _change("quantile_change", 0.5, 100.0),
    "ttft_p50_ms": _change("quantile_change", 0.5, 50.0),
    "cost_per_request": _change("mean_change", 0.25, 0.0, "both"),
    "cache_hit_rate": _change("rate_change", 0.3, 0.05, "down"),
    "guardrail_block_rate": _change("rate_change", 1.0, 0.02),
    # Quality (monitoring/feedback_drift.py): users' thumbs-up rate falling by a fifth and at
    # least 10 points; an evaluator's mean score falling by 10% and at least 0.05 (z >= 3).
    "feedback_positive_rate": _change("rate_change", 0.2, 0.1, "down"),
    **{f"eval_{name}_score": MetricSettings(method="mean_change", threshold=0.1, min_delta=0.05, direction="down",
                                            min_z=3.0)
       for name in ("grounding", "self_consistency", "judge", "assertions")},
}
METRIC_KINDS: dict[str, MetricKind] = {
    name: "statistic" if name.endswith(("_auc", "_mmd", "_psi", "_js")) else "change" for name in DEFAULT_METRICS
}


class MonitoringConfig(_Strict):
    # Schedule and windows (seconds). A run compares (now - window_s, now] with the
    # baseline_s before it, or with a pinned baseline (`sluice monitor baseline set`).
    interval_s: float = Field(300.0, gt=0)
    window_s: float = Field(3600.0, gt=0)
    baseline_s: float = Field(604800.0, gt=0)
    # Requests per side (current and baseline) below which no metric alerts (the row says why).
    min_samples: int = Field(100, ge=1)
    # Consecutive runs over the threshold before a metric alerts (windows may overlap).
    alert_after_runs: int = Field(2, ge=1)
    # Run the monitor inside `sluice serve` (one replica at a time, through a Redis lock).
    in_process: bool = False
    lock_ttl_s: float = Field(60.0, gt=0)
    redis_url: str | None = None               # None: cache.redis_url, else limits.redis_url
    metrics_port: int | None = Field(None, ge=1, le=65535)   # standalone `sluice monitor run`'s /metrics
    metrics_tenant_label: bool = False         # gauges per tenant too (bounded: off by default)

    # Segments: requests are grouped by these columns; the others are "" in the rows.
    # Without prompt_fingerprint, a team's own prompt change looks like drift.
    segment_by: list[SegmentDimension] = list(SEGMENT_DIMENSIONS)
    max_segments: int = Field(200, ge=1)       # the busiest ones, per run
    operations: list[str] = ["chat", "responses"]   # embeddings requests have no answer to judge

    # Bounded samples brought back to Python, per segment and side.
    embedding_sample: int = Field(200, ge=10)     # AUC null sd at 200 a side: 0.029 (vs 0.055 at 30)
    # Answers and prompts for refusals and languages (JS at 100 a side: docs, "Drift statistics").
    text_sample: int = Field(100, ge=10)
    # No stored prompt_embedding: embed a sample of prompt_text with the given embedder.
    embed_prompt_text: bool = True
    # ... at most this many texts per run, the busiest segments first (the others' embedding
    # metrics say the budget was used up): embedding is the costly part of a run.
    embed_max_texts: int = Field(2000, ge=0)
    # The refusal detector's embedding half (monitoring/refusal.py) on answers its patterns
    # do not decide: more recall on unusual phrasings, but an embedding per sampled answer
    # per run (text_sample x 2 x segments); off, the patterns alone decide.
    refusal_similarity: bool = False
    seed: int = 0

    # Events: a new value of these columns in a segment is a model_events row at once.
    event_kinds: list[Literal["response_model", "system_fingerprint", "prompt_fingerprint"]] = [
        "response_model", "system_fingerprint", "prompt_fingerprint"]

    metrics: dict[str, MetricOverride] = {}

    # Hallucination evaluators (monitoring/evaluators/config.py), run after each drift run.
    evaluators: EvaluatorsConfig = EvaluatorsConfig()
    # The monitor's own gateway key (usually `${ENV}`): its calls are never cached, never
    # counted against limits or budgets, and stored as traffic = 'evaluator'. Never logged.
    evaluator_key: SecretStr | None = None

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, v: dict[str, MetricOverride]) -> dict[str, MetricOverride]:
        unknown = sorted(set(v) - set(DEFAULT_METRICS))
        if unknown:
            raise ValueError(f"unknown metric(s) {', '.join(unknown)} (known: {', '.join(DEFAULT_METRICS)})")
        return v

    @field_validator("segment_by")
    @classmethod
    def _distinct(cls, v: list[SegmentDimension]) -> list[SegmentDimension]:
        if len(set(v)) != len(v):
            raise ValueError("a dimension is listed twice")
        return v

    @model_validator(mode="after")
    def _redis_scheme(self) -> MonitoringConfig:
        if self.redis_url is not None and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("redis_url must start with redis://, rediss:// or unix://")
        return self

    def metric(self, name: str) -> MetricSettings:
        """The effective settings of a metric: its default with the YAML's overrides."""
        base = DEFAULT_METRICS[name]
        override = self.metrics.get(name)
        if override is None:
            return base
        return base.model_copy(update=override.model_dump(exclude_none=True))

    def lock_redis_url(self, *fallbacks: str | None) -> str | None:
        """The Redis of the in-process lock: `redis_url`, else the first configured fallback
        (the caller passes cache.redis_url, limits.redis_url)."""
        return self.redis_url or next((url for url in fallbacks if url), None)
