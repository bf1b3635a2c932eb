"""Turn a finished request into its trace, its metrics and its `llm_requests` row.

The server span starts with the request (its trace id goes back in a header and honours
an incoming `traceparent`); the step spans (auth, guardrails, cache, each provider
attempt, the stream) are created when the request ends, from the timings the pipeline
kept in the context. So the request path holds no span bookkeeping, and the work here
runs after the answer was sent. Export to ClickHouse happens in telemetry's background
writers; nothing here waits on it.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from gateway.context import RequestContext
from gateway.routing import Router
from gateway.types import Scope, WireFormat
from gateway.wire import anthropic as anthropic_wire
from gateway.wire import openai as openai_wire
from telemetry import RequestRecord, Telemetry
from telemetry import semconv as sc
from telemetry.tracing import extract_context

logger = logging.getLogger("sluice.observe")

_PROVIDER_NAMES = {"openai": "openai", "azure": "azure.ai.openai", "anthropic": "anthropic"}


class RequestObserver:
    def __init__(self, telemetry: Telemetry, router: Router):
        self._tel = telemetry
        self._tracer = telemetry.tracer
        self._router = router

    def start(self, ctx: RequestContext, scope: Scope) -> None:
        span = self._tracer.start_span(
            f"{scope['method']} {scope['path']}", context=extract_context(scope["headers"]),
            kind=SpanKind.SERVER, start_time=ctx.start_ns)
        ctx.span = span
        span_ctx = span.get_span_context()
        if span_ctx.is_valid:
            ctx.trace_id = format(span_ctx.trace_id, "032x")
            ctx.span_id = format(span_ctx.span_id, "016x")

    def finish(self, ctx: RequestContext, body: dict | None) -> None:
        """Never raises: telemetry must not turn a served request into an error."""
        try:
            if ctx.span is not None and ctx.span.is_recording():   # unsampled: no step spans to build
                self._spans(ctx)
            self._tel.record(self._record(ctx, body))
        except Exception:
            logger.exception("telemetry failed for request %s", ctx.request_id)

    def _ns(self, ctx: RequestContext, t: float) -> int:
        return ctx.start_ns + int((t - ctx.started) * 1e9)

    def _spans(self, ctx: RequestContext) -> None:
        server = ctx.span
        parent = trace.set_span_in_context(server)
        tracer = self._tracer
        for name, t0, t1, attrs in ctx.steps:
            step = tracer.start_span(name, context=parent, start_time=self._ns(ctx, t0), attributes=attrs)
            step.end(end_time=self._ns(ctx, t1))
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
            span = tracer.start_span(f"{op} {upstream_model}", context=parent, kind=SpanKind.CLIENT,
                                     start_time=self._ns(ctx, attempt.started), attributes=attrs)
            if attempt.outcome != "ok":
                span.set_status(Status(StatusCode.ERROR, attempt.outcome))
                span.set_attribute(sc.ERROR_TYPE, attempt.outcome)
            span.end(end_time=self._ns(ctx, attempt.started + attempt.latency_ms / 1000))
        if ctx.stream and ctx.ttft_ms is not None and ctx.finished is not None:
            stream = tracer.start_span("sluice.stream", context=parent,
                                       start_time=ctx.start_ns + int(ctx.ttft_ms * 1e6))
            stream.end(end_time=self._ns(ctx, ctx.finished))
        server.set_attributes(self._server_attributes(ctx))
        if ctx.status >= 500 or ctx.error_type:
            server.set_status(Status(StatusCode.ERROR, ctx.error_type or str(ctx.status)))
        server.end(end_time=self._ns(ctx, ctx.finished or time.perf_counter()))

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
