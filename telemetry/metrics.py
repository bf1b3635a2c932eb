"""Prometheus metrics for `GET /metrics`, in their own registry (no global state).

Labels are low-cardinality by construction: models, providers, deployments, status
classes, outcomes, and the tenant (tenants are configured, and the label can be turned
off). Never key ids, request ids or the caller's `user`. Label values that come from
requests (a public model name on a 404, an upstream's response model) are capped per
label by `_Capped`: past the cap they become "other", so a client cannot blow up the
series count.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from telemetry.records import RequestRecord

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                     0.25, 1)
_GUARDRAIL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)

BREAKER_STATES = {"closed": 0, "half_open": 1, "half-open": 1, "open": 2}


class _Capped:
    """Maps a label value to itself for the first `limit` distinct values, else "other"."""

    def __init__(self, limit: int = 200) -> None:
        self._limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        with self._lock:
            if len(self._seen) < self._limit:
                self._seen.add(value)
                return value
        return "other"


def _status_class(code: int) -> str:
    return f"{code // 100}xx" if 100 <= code <= 599 else "none"


class GatewayMetrics:
    def __init__(self, *, tenant_label: bool = True, label_limit: int = 200) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._tenant_label = tenant_label
        self._model = _Capped(label_limit)
        self._provider = _Capped(label_limit)
        self._tenant = _Capped(label_limit)
        self._misc = _Capped(label_limit)   # error types, guardrail names/actions, deployments
        tenant = ("tenant",) if tenant_label else ()
        self._children: dict[tuple, object] = {}

        self.requests = Counter(
            "sluice_requests", "Requests answered by the gateway.",
            ("operation", "public_model", "provider", "status_class", *tenant), registry=r)
        self.errors = Counter(
            "sluice_request_errors", "Failed requests by error type.",
            ("error_type", "public_model", "provider"), registry=r)
        self.latency = Histogram(
            "sluice_request_duration_seconds", "Whole-request latency seen by the caller.",
            ("operation", "public_model", "stream"), buckets=_LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram(
            "sluice_time_to_first_token_seconds", "Time to the first streamed token.",
            ("public_model",), buckets=_TTFT_BUCKETS, registry=r)
        self.overhead = Histogram(
            "sluice_gateway_overhead_seconds", "Time spent in the gateway outside upstream calls.",
            ("operation",), buckets=_OVERHEAD_BUCKETS, registry=r)
        self.tokens = Counter(
            "sluice_tokens", "Tokens reported by upstreams (kind: input, output, cached).",
            ("public_model", "provider", "kind", *tenant), registry=r)
        self.cost = Counter(
            "sluice_cost_usd", "Cost of requests in USD, from the price table.",
            ("public_model", "provider", *tenant), registry=r)
        self.unpriced = Counter(
            "sluice_unpriced_requests", "Requests with usage but no price for the model.",
            ("public_model", "provider"), registry=r)
        self.attempts = Counter(
            "sluice_upstream_attempts", "Upstream attempts (retries and fallbacks included).",
            ("public_model",), registry=r)
        self.fallbacks = Counter(
            "sluice_fallbacks", "Requests answered by a fallback deployment.",
            ("public_model",), registry=r)
        self.upstream_errors = Counter(
            "sluice_upstream_errors", "Upstream attempts that did not succeed, by deployment and outcome "
            "(http_429, http_500, timeout, connect_error, connection_dropped, circuit_open: skipped while open).",
            ("deployment", "outcome"), registry=r)
        self.cache = Counter(
            "sluice_cache_requests", "Cache outcomes: hit, semantic-hit, miss, bypass, off, error.",
            ("operation", "status"), registry=r)
        self.guardrail_actions = Counter(
            "sluice_guardrail_actions", "Guardrail outcomes, e.g. pii/mask, toxicity/block.",
            ("guardrail", "action"), registry=r)
        self.guardrail_latency = Histogram(
            "sluice_guardrail_duration_seconds", "Time spent in guardrails per request.",
            (), buckets=_GUARDRAIL_BUCKETS, registry=r)
        self.breaker_state = Gauge(
            "sluice_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open.",
            ("deployment",), registry=r)
        self.queue_depth = Gauge(
            "sluice_telemetry_queue_depth", "Rows/spans waiting for ClickHouse.",
            ("queue",), registry=r)
        self.queue_capacity = Gauge(
            "sluice_telemetry_queue_capacity", "Maximum rows/spans held while ClickHouse is down.",
            ("queue",), registry=r)
        self.telemetry_written = Counter(
            "sluice_telemetry_rows_written", "Rows/spans written to ClickHouse.",
            ("queue",), registry=r)
        self.telemetry_dropped = Counter(
            "sluice_telemetry_rows_dropped", "Rows/spans dropped, by reason.",
            ("queue", "reason"), registry=r)
        self.telemetry_write_errors = Counter(
            "sluice_telemetry_write_errors", "Failed ClickHouse insert attempts.",
            ("queue",), registry=r)

    # -- per request ----------------------------------------------------------------

    def _child(self, metric, *values: str):
        """`metric.labels(*values)`, memoised: the client's labels() validates and locks on
        every call, which is most of the per-request metrics cost. Bounded, because every
        label value is capped or drawn from a fixed set."""
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def observe_request(self, rec: RequestRecord) -> None:
        """All per-request metrics from one record (cheap: dict lookups and additions)."""
        child = self._child
        model = self._model(rec.public_model)
        provider = self._provider(rec.provider)
        op = rec.operation
        tenant = (self._tenant(rec.tenant),) if self._tenant_label else ()

        child(self.requests, op, model, provider, _status_class(rec.status_code), *tenant).inc()
        if rec.error_type:
            child(self.errors, self._misc(rec.error_type), model, provider).inc()
        child(self.latency, op, model, "true" if rec.stream else "false").observe(
            rec.latency_ms / 1000.0)
        if rec.ttft_ms is not None:
            child(self.ttft, model).observe(rec.ttft_ms / 1000.0)
        if rec.gateway_overhead_ms is not None:
            child(self.overhead, op).observe(rec.gateway_overhead_ms / 1000.0)
        if rec.input_tokens:
            child(self.tokens, model, provider, "input", *tenant).inc(rec.input_tokens)
        if rec.output_tokens:
            child(self.tokens, model, provider, "output", *tenant).inc(rec.output_tokens)
        if rec.cached_tokens:
            child(self.tokens, model, provider, "cached", *tenant).inc(rec.cached_tokens)
        if rec.cost_usd:
            child(self.cost, model, provider, *tenant).inc(rec.cost_usd)
        elif rec.cost_usd is None and (rec.input_tokens or rec.output_tokens):
            child(self.unpriced, model, provider).inc()
        if rec.attempts:
            child(self.attempts, model).inc(rec.attempts)
        if rec.fallback:
            child(self.fallbacks, model).inc()
        child(self.cache, op, self._misc(rec.cache_status)).inc()
        for action in rec.guardrail_actions:
            name, _, outcome = action.partition(":")
            child(self.guardrail_actions, self._misc(name), self._misc(outcome or "flag")).inc()
        if rec.guardrail_latency_ms is not None:
            self.guardrail_latency.observe(rec.guardrail_latency_ms / 1000.0)

    def observe_failed_attempts(self, attempts) -> None:
        """Each try of one request that did not succeed (`gateway.errors.AttemptRecord`):
        which deployment answered 429 or 5xx, timed out, or was skipped by its breaker."""
        child, misc = self._child, self._misc
        for a in attempts:
            if a.outcome != "ok":
                child(self.upstream_errors, misc(a.deployment), misc(a.outcome)).inc()

    def set_breaker_state(self, deployment: str, state: str | int) -> None:
        """`state`: "closed" | "half_open" | "open" (or 0/1/2)."""
        value = state if isinstance(state, int) else BREAKER_STATES[state]
        self.breaker_state.labels(self._misc(deployment)).set(value)

    def set_cache_semantic(self, available: bool) -> None:
        """Registered only with a cache: 0 means it answers exact repeats only (its embedder
        failed to load, or its Redis has no vector search), which start-up logs once."""
        gauge = getattr(self, "_cache_semantic", None)
        if gauge is None:
            gauge = self._cache_semantic = Gauge(
                "sluice_cache_semantic_available",
                "1 while the cache matches paraphrases (embedder loaded, vector search in its store); "
                "0: exact repeats only.", registry=self.registry)
        gauge.set(1 if available else 0)

    # -- exporter queues (WriterListener) -------------------------------------------

    def register_queue(self, queue: str, depth: Callable[[], int], capacity: int) -> None:
        self.queue_depth.labels(queue).set_function(depth)
        self.queue_capacity.labels(queue).set(capacity)

    def rows_written(self, queue: str, count: int) -> None:
        self.telemetry_written.labels(queue).inc(count)

    def rows_dropped(self, queue: str, count: int, reason: str) -> None:
        self.telemetry_dropped.labels(queue, reason).inc(count)

    def write_failed(self, queue: str) -> None:
        self.telemetry_write_errors.labels(queue).inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition body and its content type, for `GET /metrics`."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
