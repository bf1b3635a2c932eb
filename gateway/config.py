"""Typed configuration loaded from one YAML file (`sluice.yaml`).

`load_config(path)` reads YAML, substitutes `${VAR}` / `${VAR:-default}` from the
environment, validates into the models below (unknown keys rejected) and checks
cross references. Every failure is a `ConfigError` whose message starts with the YAML
path of the offending key, e.g. `models.chat-default.deployments[1].provider: ...`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cache.config import CacheConfig
from gateway.feedback_config import FeedbackConfig
from gateway.quota.config import AdminConfig, Budget, LimitsConfig, RateLimits
from guardrails.config import GuardrailsConfig
from monitoring.config import MonitoringConfig
from telemetry.config import TelemetryConfig


class ConfigError(ValueError):
    """A configuration problem; the message names the key path."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Timeouts(_Strict):
    """Per-deployment upstream timeouts, in seconds. `total_s` bounds one whole attempt."""

    connect_s: float = Field(5.0, gt=0)
    read_s: float = Field(60.0, gt=0)
    total_s: float = Field(300.0, gt=0)


class ProviderConfig(_Strict):
    type: Literal["openai", "azure", "anthropic"]
    base_url: str
    api_key: str | None = None
    api_version: str | None = None           # azure: the `api-version` query parameter
    headers: dict[str, str] = {}             # extra static headers sent upstream
    timeouts: Timeouts = Timeouts()

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")


class DeploymentConfig(_Strict):
    provider: str
    model: str                               # the upstream model (Azure: the deployment name)
    weight: float = Field(1.0, gt=0)
    priority: int = 0                        # lower runs first; ties keep list order
    timeouts: Timeouts | None = None         # overrides the provider's
    name: str | None = None                  # shown in headers and traces; default provider/model


Strategy = Literal["fallback", "weighted", "least-latency", "least-busy"]


class ModelConfig(_Strict):
    strategy: Strategy = "fallback"
    deployments: list[DeploymentConfig] = Field(min_length=1)
    retries: int | None = Field(None, ge=0)  # per deployment; default router.retries
    # The largest max_tokens / max_completion_tokens / max_output_tokens a caller may ask
    # of this model (a larger one is a 400 naming the field); None: only the global ceiling.
    max_output_tokens: int | None = Field(None, ge=1, le=2**31 - 1)


class BreakerConfig(_Strict):
    failure_threshold: int = Field(5, ge=1)  # consecutive failures that open the circuit
    cooldown_s: float = Field(30.0, gt=0)


class RouterConfig(_Strict):
    retries: int = Field(1, ge=0)            # extra tries on the same deployment for transient errors
    backoff_base_s: float = Field(0.1, ge=0)
    backoff_max_s: float = Field(2.0, ge=0)
    max_retry_after_s: float = Field(10.0, ge=0)   # a longer Retry-After falls over instead of waiting
    max_attempts: int = Field(6, ge=1)       # across all deployments of one request
    breaker: BreakerConfig = BreakerConfig()


class KeyConfig(_Strict):
    key: str | None = None                   # plaintext (usually `${ENV}`); hashed at load, never kept
    key_sha256: str | None = None            # or the hex sha256 of the key
    tenant: str
    name: str | None = None                  # non-secret label for traces; default a hash prefix
    models: list[str] | None = None          # allowed public models; None = all
    limits: RateLimits | None = None         # rpm, tpm, max_parallel (docs/limits.md)
    budget: Budget | None = None             # {usd, period: day | month | total}


class ServerConfig(_Strict):
    max_body_bytes: int = Field(8 * 1024 * 1024, gt=0)
    upstream_client: Literal["http1", "aiohttp", "httpx"] = "http1"   # measured: docs/benchmarks.md
    max_upstream_connections: int = Field(1000, ge=1)
    # Worker processes, shared nothing but the telemetry collector (`sluice serve --workers`).
    workers: int = Field(1, ge=1)
    # Request limits, each a 400 naming the limit (gateway/wire/limits.py says why these).
    # JSON nesting: real bodies (tool schemas ten levels deep included) stay under ~40; the
    # ceiling keeps every accepted body re-serialisable (orjson writes 254 levels at most).
    max_json_depth: int = Field(64, ge=8, le=200)
    max_messages: int = Field(2048, ge=1)    # chat / messages `messages`, responses `input` items
    max_n: int = Field(16, ge=1, le=128)     # choices per chat completion (OpenAI allows 128)
    # Connections (gateway/connections.py, docs/operations.md), per process. A head or body not
    # received in time gets 408, a head over max_header_bytes 431, a connection over a cap
    # 503 (in the caller's wire format), then the connection is closed.
    header_timeout_s: float = Field(10.0, gt=0)       # connect / first byte to the end of the headers
    body_timeout_s: float = Field(60.0, gt=0)         # end of the headers to the end of the body
    keep_alive_timeout_s: float = Field(5.0, gt=0)    # idle between two requests
    max_connections: int = Field(10_000, ge=1)        # lowered if the open-file limit cannot hold them
    max_connections_per_client: int = Field(1_000, ge=0)   # per peer address (a proxy counts as one); 0: off
    max_header_bytes: int = Field(32 * 1024, ge=1024)  # request line + headers
    # SIGTERM: stop accepting, give in-flight requests and streams this long, flush, exit 0.
    shutdown_timeout_s: float = Field(30.0, ge=0)
    # /metrics and /sluice/*: with a token, only `Authorization: Bearer <ops_token>` is
    # answered (401 otherwise); without one, /sluice/* answers loopback callers only.
    ops_token: str | None = Field(None, min_length=16)
    # A second port (same host) for /metrics, /sluice/* and the health checks; then the
    # main port no longer serves /metrics and /sluice/* (docs/operations.md).
    ops_port: int | None = Field(None, ge=1, le=65535)


class SluiceConfig(_Strict):
    server: ServerConfig = ServerConfig()
    data_dir: str | None = None              # default $SLUICE_DATA_DIR or ./.sluice
    providers: dict[str, ProviderConfig] = {}
    models: dict[str, ModelConfig] = {}
    router: RouterConfig = RouterConfig()
    keys: list[KeyConfig] | None = None
    telemetry: TelemetryConfig = TelemetryConfig()
    cache: CacheConfig = CacheConfig()
    guardrails: GuardrailsConfig = GuardrailsConfig()
    limits: LimitsConfig = LimitsConfig()    # rate limits and budgets (docs/limits.md)
    admin: AdminConfig = AdminConfig()       # the admin API (/admin/*), off without a master key
    monitoring: MonitoringConfig = MonitoringConfig()   # the drift monitor (docs/monitoring.md)
    feedback: FeedbackConfig = FeedbackConfig()         # POST /v1/feedback, implicit signals

    def resolved_data_dir(self) -> Path:
        return Path(self.data_dir or os.environ.get("SLUICE_DATA_DIR") or ".sluice")


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(node: Any, path: str, env: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: _interpolate(v, f"{path}.{k}" if path else str(k), env) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, f"{path}[{i}]", env) for i, v in enumerate(node)]
    if isinstance(node, str) and "${" in node:
        def substitute(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(f"{path}: environment variable {name} is not set")
        return _ENV_REF.sub(substitute, node)
    return node


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _check_references(cfg: SluiceConfig) -> None:
    for model_name, model in cfg.models.items():
        for i, dep in enumerate(model.deployments):
            if dep.provider not in cfg.providers:
                known = ", ".join(sorted(cfg.providers)) or "none"
                raise ConfigError(f"models.{model_name}.deployments[{i}].provider: unknown provider "
                                  f"'{dep.provider}' (known: {known})")
    for i, key in enumerate(cfg.keys or []):
        if (key.key is None) == (key.key_sha256 is None):
            raise ConfigError(f"keys[{i}]: give exactly one of 'key' or 'key_sha256'")
        for m in key.models or []:
            if m not in cfg.models:
                raise ConfigError(f"keys[{i}].models: unknown model '{m}'")


def parse_config(raw: Any, env: dict[str, str] | None = None) -> SluiceConfig:
    """Validate an already-parsed YAML document."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("<root>: expected a mapping at the top of the file")
    raw = _interpolate(raw, "", dict(os.environ) if env is None else env)
    try:
        cfg = SluiceConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{_format_loc(e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None
    _check_references(cfg)
    return cfg


def load_config(path: str | Path, env: dict[str, str] | None = None) -> SluiceConfig:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(raw, env)
