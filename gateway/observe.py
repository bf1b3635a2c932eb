"""Turn a finished request into its trace, its metrics and its `llm_requests` row.

The trace id and sampling decision are fixed when the request starts (the id goes back in
a header; an incoming `traceparent` is honoured); every span (server, auth, guardrails,
cache, each provider attempt, the stream) is built when the request ends, from the
timings the pipeline kept in the context (`telemetry.span_recorder`). So the request path
holds no span bookkeeping, and the work here runs after the answer was sent. Export to
ClickHouse happens in telemetry's background writers; nothing here waits on it.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone

from opentelemetry.trace import SpanKind

from gateway.context import RequestContext
from gateway.routing import Router
from gateway.types import Scope, WireFormat
from gateway.wire import anthropic as anthropic_wire
from gateway.wire import openai as openai_wire
from telemetry import RequestRecord, Telemetry
from telemetry import semconv as sc
from telemetry.span_recorder import TraceIds

logger = logging.getLogger("sluice.observe")

_PROVIDER_NAMES = {"openai": "openai", "azure": "azure.ai.openai", "anthropic": "anthropic"}


class RequestObserver:
    def __init__(self, telemetry: Telemetry, router: Router):
        self._tel = telemetry
        self._spans = telemetry.spans
        self._router = router

    def start(self, ctx: RequestContext, scope: Scope) -> None:
        ctx.trace = self._spans.begin(scope["headers"], scope["path"])

    def finish(self, ctx: RequestContext, body: dict | None) -> None:
        """Never raises: telemetry must not turn a served request into an error."""
        try:
            if ctx.trace is not None and ctx.trace.sampled:
                self._record_spans(ctx, ctx.trace)
            self._tel.record(self._record(ctx, body))
        except Exception:
            logger.exception("telemetry failed for request %s", ctx.request_id)

    def _ns(self, ctx: RequestContext, t: float) -> int:
        return ctx.start_ns + int((t - ctx.started) * 1e9)

    def _record_spans(self, ctx: RequestContext, ids: TraceIds) -> None:
        spans = self._spans
        server_id = ids.span_id
        for name, t0, t1, attrs in ctx.steps:
            spans.record(ids, name, span_id=spans.new_span_id(), parent_id=server_id, kind=SpanKind.INTERNAL,
                         start_ns=self._ns(ctx, t0), end_ns=self._ns(ctx, t1), attributes=attrs)
        route = self._router.routes.get(ctx.public_model)
        op = ctx.operation.value
        for n, attempt in enumerate(ctx.attempts, 1):
            if attempt.outcome == "circuit_open":
                continue
            dep = route.by_name.get(attempt.deployment) if route else None
            upstream_model = dep.upstream_model if dep else ""
            attrs = {
                sc.GEN_AI_OPERATION_NAME: op,
                sc.GEN_AI_PROVIDER_NAME: _PROVIDER_NAMES.get(dep.provider_type, dep.provider_type) if dep else "",
                sc.GEN_AI_REQUEST_MODEL: upstream_model,
                sc.SLUICE_DEPLOYMENT: attempt.deployment,
                sc.SLUICE_ATTEMPT: n,
                "sluice.attempt.outcome": attempt.outcome,
            }
            if attempt.status is not None:
                attrs[sc.HTTP_RESPONSE_STATUS_CODE] = attempt.status
            failed = attempt.outcome != "ok"
            if failed:
                attrs[sc.ERROR_TYPE] = attempt.outcome
            spans.record(ids, f"{op} {upstream_model}", span_id=spans.new_span_id(), parent_id=server_id,
                         kind=SpanKind.CLIENT, start_ns=self._ns(ctx, attempt.started),
                         end_ns=self._ns(ctx, attempt.started + attempt.latency_ms / 1000), attributes=attrs,
                         error=attempt.outcome if failed else None)
        end_ns = self._ns(ctx, ctx.finished or time.perf_counter())
        if ctx.stream and ctx.ttft_ms is not None:
            spans.record(ids, "sluice.stream", span_id=spans.new_span_id(), parent_id=server_id,
                         kind=SpanKind.INTERNAL, start_ns=ctx.start_ns + int(ctx.ttft_ms * 1e6), end_ns=end_ns)
        failed = ctx.status >= 500 or bool(ctx.error_type)
        spans.record(ids, f"{ctx.method} {ctx.path}", span_id=server_id, parent_id=None, kind=SpanKind.SERVER,
                     start_ns=ctx.start_ns, end_ns=end_ns, attributes=self._server_attributes(ctx),
                     error=(ctx.error_type or str(ctx.status)) if failed else None)

    def _server_attributes(self, ctx: RequestContext) -> dict:
        s = ctx.summary
        dep = ctx.deployment
        attrs = {
            sc.HTTP_RESPONSE_STATUS_CODE: ctx.status,
            sc.GEN_AI_OPERATION_NAME: ctx.operation.value,
            sc.GEN_AI_REQUEST_MODEL: ctx.public_model,
            sc.SLUICE_REQUEST_ID: ctx.request_id,
            sc.SLUICE_TENANT: ctx.principal.tenant,
            sc.SLUICE_KEY_ID: ctx.principal.key_id,
            sc.SLUICE_API_FORMAT: ctx.api_format.value,
            sc.SLUICE_PUBLIC_MODEL: ctx.public_model,
            sc.SLUICE_ATTEMPTS: len(ctx.attempts),
            sc.SLUICE_FALLBACK: ctx.fallback,
            sc.SLUICE_STREAM: ctx.stream,
            sc.SLUICE_GATEWAY_OVERHEAD_MS: ctx.overhead_ms(),
            "sluice.cache.status": ctx.cache_status,
        }
        if ctx.guardrail_actions:
            attrs["sluice.guardrail.actions"] = list(ctx.guardrail_actions)
        if dep is not None:
            attrs[sc.GEN_AI_PROVIDER_NAME] = _PROVIDER_NAMES.get(dep.provider_type, dep.provider_type)
            attrs[sc.SLUICE_DEPLOYMENT] = dep.name
            attrs[sc.SLUICE_PROVIDER] = dep.provider
        if s.response_model:
            attrs[sc.GEN_AI_RESPONSE_MODEL] = s.response_model
        if s.response_id:
            attrs[sc.GEN_AI_RESPONSE_ID] = s.response_id
        if s.finish_reason:
            attrs[sc.GEN_AI_RESPONSE_FINISH_REASONS] = [s.finish_reason]
        if s.usage.input_tokens or s.usage.output_tokens:
            attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] = s.usage.input_tokens
            attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] = s.usage.output_tokens
        if ctx.ttft_ms is not None:
            attrs[sc.SLUICE_TTFT_MS] = ctx.ttft_ms
        for key, attr in (("temperature", sc.GEN_AI_REQUEST_TEMPERATURE), ("top_p", sc.GEN_AI_REQUEST_TOP_P),
                          ("max_tokens", sc.GEN_AI_REQUEST_MAX_TOKENS), ("seed", sc.GEN_AI_REQUEST_SEED)):
            value = ctx.params.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                attrs[attr] = value
        if ctx.error_type:
            attrs[sc.ERROR_TYPE] = ctx.error_type
        return attrs

    def _record(self, ctx: RequestContext, body: dict | None) -> RequestRecord:
        s = ctx.summary
        dep = ctx.deployment
        prompt = ""
        if body is not None and ctx.operation.value == "chat":
            prompt = (anthropic_wire.prompt_text(body) if ctx.api_format is WireFormat.ANTHROPIC
                      else openai_wire.prompt_text(body))
        temperature = ctx.params.get("temperature")
        max_tokens = ctx.params.get("max_tokens")
        user = ctx.params.get("user")
        return RequestRecord(
            timestamp=datetime.fromtimestamp(ctx.start_ns / 1e9, timezone.utc),
            request_id=ctx.request_id, trace_id=ctx.trace_id, span_id=ctx.span_id,
            tenant=ctx.principal.tenant, key_id=ctx.principal.key_id,
            operation=ctx.operation.value, api_format=ctx.api_format.value, public_model=ctx.public_model,
            provider=dep.provider if dep else "", provider_type=dep.provider_type if dep else "",
            deployment=dep.name if dep else "", upstream_model=dep.upstream_model if dep else "",
            response_model=s.response_model or "", system_fingerprint=s.system_fingerprint or "",
            status_code=ctx.status, error_type=ctx.error_type or "",
            attempts=sum(1 for a in ctx.attempts if a.outcome != "circuit_open"), fallback=ctx.fallback,
            latency_ms=ctx.latency_ms(), ttft_ms=ctx.ttft_ms, gateway_overhead_ms=ctx.overhead_ms(),
            input_tokens=s.usage.input_tokens if dep else None,
            output_tokens=s.usage.output_tokens if dep else None,
            cached_tokens=s.usage.cached_tokens if dep else None,
            cache_status=ctx.cache_status, cache_similarity=ctx.cache_similarity,
            guardrail_actions=list(ctx.guardrail_actions), guardrail_latency_ms=ctx.guardrail_ms,
            prompt_text=prompt, completion_text=s.text, prompt_embedding=ctx.prompt_embedding,
            finish_reason=s.finish_reason or "", stream=ctx.stream,
            temperature=float(temperature) if isinstance(temperature, (int, float)) else None,
            max_tokens=max_tokens if isinstance(max_tokens, int) else None,
            user=user if isinstance(user, str) else "",
            user_agent=ctx.user_agent,
        )
