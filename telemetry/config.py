"""The `telemetry:` section of `sluice.yaml`.

One typed object; unknown keys are rejected so a typo (`log_prompt:`) fails at start-up
with the key path instead of silently logging prompts the operator meant to hide.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from telemetry.pricing import ModelPrice


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TenantLogging(_Strict):
    """Per-tenant overrides of prompt/answer logging; `None` inherits the global value."""

    log_prompts: bool | None = None
    max_text_chars: int | None = Field(None, ge=0)


class OtlpConfig(_Strict):
    """An OTLP/HTTP span exporter that runs alongside the ClickHouse one."""

    endpoint: str                      # e.g. http://otel-collector:4318/v1/traces
    headers: dict[str, str] = {}
    protocol: Literal["http/protobuf"] = "http/protobuf"
    timeout_s: float = Field(10.0, gt=0)

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v


class ClickHouseLayout(_Strict):
    """`telemetry.clickhouse`: how the tables are laid out on a ClickHouse cluster.

    With `cluster`, migrations run `ON CLUSTER`, data tables become Replicated engines
    sharded behind Distributed tables of the same names, and the small bookkeeping tables
    are replicated to every node (telemetry/cluster_ddl.py). The macros are the server's
    own (`<macros>` in its config).
    """

    cluster: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")
    # Keeper path of every replicated table; {shard} and {replica} are server macros.
    zookeeper_path: str = "/clickhouse/tables/{shard}/{database}/{table}"
    replica_name: str = "{replica}"
    # How the Distributed tables spread inserts over the shards.
    sharding_key: str = "rand()"


class TelemetryConfig(_Strict):
    enabled: bool = True                       # tracing + request rows (metrics are always on)
    clickhouse_url: str | None = None          # None -> chdb://<data_dir>/clickhouse
    clickhouse: ClickHouseLayout = ClickHouseLayout()
    # false: this process never migrates (`sluice migrate`, the Helm chart's hook Job, does);
    # it writes nothing and /readyz answers 503 while the schema is older than it needs.
    # Needs a ClickHouse server: the embedded engine is migrated by the process that holds it.
    migrate_on_start: bool = True
    database: str = Field("sluice", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    ttl_days: int = Field(30, ge=0)            # 0 = forever; applied when tables are created
    service_name: str = "sluice"

    # process: a collector process writes to ClickHouse (off the gateway's GIL; shared by
    # `--workers`); thread: writer threads inside the gateway process.
    writer: Literal["process", "thread"] = "process"
    # The collector process's CPU priority (Linux). idle: it runs only on CPU the gateway
    # and everything else leave free (SCHED_IDLE), so telemetry never takes a core from
    # requests; if it falls behind (unread data piling up on its socket) it raises itself
    # to normal until caught up, which needs root or CAP_SYS_NICE; without them it stays
    # idle, and on a host with no free CPU at all its backlog ends as counted drops in
    # the gateway. normal: an ordinary process, sharing the CPU with the requests.
    collector_priority: Literal["idle", "normal"] = "idle"

    # The bounded-queue writers (request rows and spans share these settings).
    # Rows per INSERT: ClickHouse wants big, rare inserts. Every insert is a part the
    # engine merges later; at 5,000 rows / 1 s the embedded engine's merges and inserts
    # cost a third more CPU than at 20,000 / 2 s (docs/telemetry.md, "Cost of tracing").
    batch_size: int = Field(20_000, ge=1)
    flush_interval_s: float = Field(2.0, gt=0)
    queue_max: int = Field(50_000, ge=1)       # rows held while ClickHouse is slow or down
    retry_backoff_s: float = Field(30.0, gt=0)  # cap of the exponential backoff between retries
    connect_timeout_s: float = Field(5.0, gt=0)

    # Content logging: the text columns are written after guardrail redaction.
    log_prompts: bool = True
    max_text_chars: int = Field(4000, ge=0)
    log_embeddings: bool = True
    tenants: dict[str, TenantLogging] = {}

    prices: dict[str, ModelPrice] = {}         # "provider_type/model" or "model" -> price
    otlp: OtlpConfig | None = None
    sample_ratio: float = Field(1.0, ge=0.0, le=1.0)  # spans only; request rows are never sampled
    # Spans of a request that failed upstream (an attempt that did not succeed, so every
    # retry and fallback, or a 5xx answer) are kept whatever sample_ratio drew, unless the
    # caller's traceparent said not to sample: on-call needs those traces most.
    keep_failed_traces: bool = True
    # Callers whose `traceparent` is honoured (addresses or CIDRs; "*" for any). From anyone
    # else it starts no trace of ours: the request gets its own trace id and sampling, and
    # the caller's span is kept as a link on the server span (docs/telemetry.md).
    trusted_trace_sources: list[str] = ["127.0.0.0/8", "::1"]
    metrics_tenant_label: bool = True          # turn off when tenants are many

    @field_validator("trusted_trace_sources")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        for entry in v:
            if entry != "*":
                ipaddress.ip_network(entry, strict=False)      # ValueError names the bad entry
        return v

    @field_validator("clickhouse_url")
    @classmethod
    def _known_scheme(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("chdb://", "http://", "https://")):
            raise ValueError("must start with chdb://, http:// or https://")
        return v

    @model_validator(mode="after")
    def _server_only_options(self) -> "TelemetryConfig":
        embedded = self.clickhouse_url is None or self.clickhouse_url.startswith("chdb://")
        if embedded and self.clickhouse.cluster:
            raise ValueError("clickhouse.cluster needs a ClickHouse server (clickhouse_url: http(s)://...)")
        if embedded and not self.migrate_on_start:
            raise ValueError("migrate_on_start: false needs a ClickHouse server (clickhouse_url: http(s)://...); "
                             "the embedded engine is migrated by the process that holds it")
        return self

    def text_policy(self, tenant: str) -> tuple[bool, int]:
        """(log_prompts, max_text_chars) for a tenant, its overrides applied."""
        override = self.tenants.get(tenant)
        if override is None:
            return self.log_prompts, self.max_text_chars
        log = self.log_prompts if override.log_prompts is None else override.log_prompts
        cap = self.max_text_chars if override.max_text_chars is None else override.max_text_chars
        return log, cap
