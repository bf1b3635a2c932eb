"""The state of one request as it moves through the pipeline (typed, never a dict)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from gateway.auth import ANONYMOUS, Principal
from gateway.errors import AttemptRecord
from gateway.quota.model import Reservation
from gateway.routing import Deployment
from gateway.types import JSON, Operation, WireFormat
from gateway.wire.summary import ResponseSummary
from guardrails.results import GuardrailResult, summarize
from telemetry.span_recorder import TraceIds


CACHE_HITS = ("hit", "semantic-hit")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """What a route speaks: the operation and the caller's wire format."""

    operation: Operation
    api_format: WireFormat


@dataclass(slots=True)
class RequestContext:
    endpoint: Endpoint
    request_id: str = field(default_factory=lambda: os.urandom(12).hex())
    started: float = field(default_factory=time.perf_counter)
    principal: Principal = ANONYMOUS
    public_model: str = ""
    stream: bool = False
    forward_headers: dict[str, str] | None = None     # caller headers a provider needs (anthropic-beta)
    deployment: Deployment | None = None
    attempts: list[AttemptRecord] = field(default_factory=list)
    status: int = 200
    error_type: str | None = None
    summary: ResponseSummary = field(default_factory=ResponseSummary)
    response_started: bool = False
    answer_complete: bool = False     # the caller received the stream's terminal event
    ttft_ms: float | None = None
    processing_ms: float = 0.0        # gateway work while streaming, counted into overhead
    finished: float | None = None
    body: JSON | None = None          # the request as sent on (after input guardrails)
    user_agent: str = ""
    # limits (gateway/quota): what to settle after the answer, why a request was refused
    reservation: Reservation | None = None
    limited: str = ""                 # "" | rate | budget | concurrency (the llm_requests column)
    extra_headers: list[tuple[bytes, bytes]] | None = None   # x-ratelimit-* on every answer
    # telemetry
    start_ns: int = field(default_factory=time.time_ns)
    trace: TraceIds | None = None     # ids + sampling decision, fixed at the start
    method: str = "POST"
    path: str = ""
    steps: list[tuple[str, float, float, dict | None]] = field(default_factory=list)  # name, t0, t1, attrs
    cache_status: str = "off"
    cache_similarity: float | None = None
    prompt_embedding: list[float] | None = None
    guardrail_actions: list[str] = field(default_factory=list)
    guardrail_results: list[GuardrailResult] = field(default_factory=list)
    guardrail_ms: float | None = None

    @property
    def trace_id(self) -> str:
        return self.trace.trace_id_hex if self.trace is not None else ""

    @property
    def span_id(self) -> str:
        return self.trace.span_id_hex if self.trace is not None else ""

    @property
    def params(self) -> JSON:
        return self.body or {}

    @property
    def api_format(self) -> WireFormat:
        return self.endpoint.api_format

    @property
    def operation(self) -> Operation:
        return self.endpoint.operation

    @property
    def fallback(self) -> bool:
        return len({a.deployment for a in self.attempts}) > 1

    def latency_ms(self) -> float:
        return ((self.finished or time.perf_counter()) - self.started) * 1000

    def overhead_ms(self) -> float:
        """Time the gateway itself added: everything but waiting on providers and backoff."""
        upstream = sum(a.latency_ms + a.backoff_ms for a in self.attempts)
        if self.stream and self.ttft_ms is not None:
            return max(0.0, self.ttft_ms - upstream) + self.processing_ms
        return max(0.0, self.latency_ms() - upstream)

    def response_headers(self) -> list[tuple[bytes, bytes]]:
        headers = [(b"x-sluice-request-id", self.request_id.encode())]
        if self.trace_id:
            headers.append((b"x-sluice-trace-id", self.trace_id.encode()))
        tries = sum(1 for a in self.attempts if a.outcome != "circuit_open")
        if self.deployment is not None:
            headers.append((b"x-sluice-deployment", self.deployment.name.encode()))
        elif self.cache_status in CACHE_HITS:
            headers.append((b"x-sluice-deployment", b"cache"))     # answered without a provider
        if tries or self.cache_status in CACHE_HITS:
            headers.append((b"x-sluice-attempts", str(tries).encode()))
        if self.cache_status != "off":
            headers.append((b"x-sluice-cache", self.cache_status.encode()))
            if self.cache_similarity is not None:
                headers.append((b"x-sluice-cache-similarity", f"{self.cache_similarity:.4f}".encode()))
        if self.guardrail_results:
            headers.append((b"x-sluice-guardrails", summarize(self.guardrail_results).encode()))
        if self.extra_headers:
            headers += self.extra_headers
        return headers
