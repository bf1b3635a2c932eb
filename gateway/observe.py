"""Turn a finished request into its trace, its metrics and its `llm_requests` row.

The trace id and sampling decision are fixed when the request starts (the id goes back in
a header; an incoming `traceparent` is honoured); every span (server, auth, guardrails,
cache, each provider attempt, the stream) is built when the request ends, from the
timings the pipeline kept in the context, as plain `TraceFacts` (`telemetry.span_recorder`).
So the request path holds no span bookkeeping, and the work here runs after the answer was
sent. Building SDK spans and exporting them to ClickHouse happen in telemetry's collector
(a separate process by default); nothing here waits on it.
"""

from __future__ import annotations

import logging
import time

from gateway.context import RequestContext
from gateway.prompt_fingerprint import prompt_fingerprint, response_format
from gateway.routing import Router
from gateway.types import Scope, WireFormat
from gateway.wire import anthropic as anthropic_wire
from gateway.wire import openai as openai_wire
from telemetry import RequestRecord, Telemetry
from telemetry import semconv as sc
from telemetry.span_recorder import TraceFacts, TraceIds

logger = logging.getLogger("sluice.observe")
_EXTRA_PARAMS = (("top_p", sc.GEN_AI_REQUEST_TOP_P), ("seed", sc.GEN_AI_REQUEST_SEED))
_NUMBERS = (int, float)


def _odd(value: object) -> object:
    """A sampling parameter that is no number (a bool, a string), as the row carries it to
    the writer: short scalars as they are, anything else as its type. The writer stores
    NULL for it and records the value in `anomalies`."""
    if value.__class__ is bool or (value.__class__ is str and len(value) <= 64):
        return value
    return f"<{type(value).__name__}>"


def _failed(ctx: RequestContext) -> bool:
    """A 5xx answer or an upstream attempt that did not succeed (retries, fallbacks, open
    breakers, a stream that broke): the requests whose spans `keep_failed_traces` keeps."""
    return ctx.status >= 500 or any(attempt.outcome != "ok" for attempt in ctx.attempts)


class RequestObserver:
    def __init__(self, telemetry: Telemetry, router: Router):
        self._tel = telemetry
        self._traces = telemetry.traces
        self._router = router
        self._span_names: dict[tuple[str, str], str] = {}
        self._keep_failed = telemetry.enabled and telemetry.config.keep_failed_traces

    def start(self, ctx: RequestContext, scope: Scope) -> None:
        ctx.trace = self._traces.begin(scope["headers"], scope["path"], (scope.get("client") or ("",))[0])

    def finish(self, ctx: RequestContext, body: dict | None) -> RequestRecord | None:
        """Never raises: telemetry must not turn a served request into an error. Never
        loses the request's row either: a record that cannot be built in full (a bug, an
        odd value) is built from what can be read, the failure noted in `anomalies`.
        Returns the record (read-only from here: telemetry owns it), None if it failed."""
        try:
            ids = ctx.trace
            # sampled at the start, or failed and ours to decide (no caller's traceparent)
            keep = ids is not None and (ids.sampled or self._keep_failed and ids.parent is None and _failed(ctx))
            try:
                rec = self._record(ctx, body)
            except Exception as exc:
                logger.exception("telemetry: request %s recorded in part", ctx.request_id)
                rec = self._partial_record(ctx, exc)
            trace = None
            if keep:
                try:
                    trace = self._trace(ctx, ids)
                except Exception:
                    logger.exception("telemetry: no spans for request %s", ctx.request_id)
                    self._tel.metrics.rows_dropped("spans", 1, "invalid")
            self._tel.record(rec, trace)
            attempts = ctx.attempts
            if attempts and (len(attempts) > 1 or attempts[0].outcome != "ok"):
                self._tel.metrics.observe_failed_attempts(attempts)
            return rec
        except Exception:
            logger.exception("telemetry failed for request %s", ctx.request_id)
            return None

    def _trace(self, ctx: RequestContext, ids: TraceIds) -> TraceFacts:
        """The facts the spans are built from where they are exported (the collector): ids,
        timings and what the request row lacks; no span objects, no attribute dicts."""
        start_ns, started = ctx.start_ns, ctx.started
        steps = tuple((name, start_ns + int((t0 - started) * 1e9), start_ns + int((t1 - started) * 1e9), attrs)
                      for name, t0, t1, attrs in ctx.steps) if ctx.steps else ()
        attempts = ()
        if ctx.attempts:
            route = self._router.routes.get(ctx.public_model)
            by_name = route.by_name if route else {}
            facts = []
            for attempt in ctx.attempts:
                if attempt.outcome == "circuit_open":
                    continue
                dep = by_name.get(attempt.deployment)
                t0 = start_ns + int((attempt.started - started) * 1e9)
                facts.append((attempt.deployment, dep.provider_type if dep else "", dep.upstream_model if dep else "",
                              attempt.outcome, attempt.status, t0, t0 + int(attempt.latency_ms * 1e6)))
            attempts = tuple(facts)
        end_ns = start_ns + int(((ctx.finished or time.perf_counter()) - started) * 1e9)
        error = ctx.error_type or (str(ctx.status) if ctx.status >= 500 else None)
        parent = ids.parent
        return (ids.trace_id, ids.span_id, parent.span_id if parent is not None else None,
                bool(parent.is_remote) if parent is not None else False,
                self._span_name(ctx.method, ctx.path), start_ns, end_ns, error,
                self._server_extras(ctx), steps, attempts,
                start_ns + int(ctx.ttft_ms * 1e6) if ctx.stream and ctx.ttft_ms is not None else None,
                (ids.link.trace_id, ids.link.span_id) if ids.link is not None else None)

    def _span_name(self, method: str, path: str) -> str:
        """The server span's name, e.g. "POST /v1/chat/completions" (memoised: the paths
        are the gateway's routes, a handful)."""
        name = self._span_names.get((method, path))
        if name is None:
            name = f"{method} {path}"
            if len(self._span_names) < 256:
                self._span_names[(method, path)] = name
        return name

    @staticmethod
    def _server_extras(ctx: RequestContext) -> dict | None:
        extras = {sc.GEN_AI_RESPONSE_ID: ctx.summary.response_id} if ctx.summary.response_id else None
        params = ctx.body
        if params:
            for key, attr in _EXTRA_PARAMS:
                value = params.get(key)
                if value is not None and value.__class__ in (int, float):
                    if extras is None:
                        extras = {}
                    extras[attr] = value
        return extras

    @staticmethod
    def _partial_record(ctx: RequestContext, exc: BaseException) -> RequestRecord:
        """The row of a request `_record()` failed on: each field that can be read."""
        rec = RequestRecord(timestamp=time.time_ns() // 1000, anomalies={"record": f"<{type(exc).__name__}>"})
        fields = (
            ("timestamp", lambda: ctx.start_ns // 1000), ("request_id", lambda: ctx.request_id),
            ("trace_id", lambda: ctx.trace_id), ("span_id", lambda: ctx.span_id),
            ("tenant", lambda: ctx.principal.tenant), ("key_id", lambda: ctx.principal.key_id),
            ("operation", lambda: ctx.operation.value), ("api_format", lambda: ctx.api_format.value),
            ("public_model", lambda: ctx.public_model), ("status_code", lambda: ctx.status),
            ("error_type", lambda: ctx.error_type or ""), ("latency_ms", lambda: ctx.latency_ms()),
            ("stream", lambda: ctx.stream), ("user_agent", lambda: ctx.user_agent),
            ("limited", lambda: ctx.limited),
            ("traffic", lambda: "evaluator" if ctx.principal.evaluator else "user"),
            ("prompt_fingerprint", lambda: prompt_fingerprint(ctx.body, ctx.api_format, ctx.operation)),
            ("response_format", lambda: response_format(ctx.body, ctx.api_format, ctx.operation)),
        )
        for name, read in fields:
            try:
                setattr(rec, name, read())
            except Exception:
                pass
        return rec

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
            timestamp=ctx.start_ns // 1000,
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
            temperature=temperature if temperature is None or temperature.__class__ in _NUMBERS else _odd(temperature),
            max_tokens=max_tokens if max_tokens is None or max_tokens.__class__ in _NUMBERS else _odd(max_tokens),
            user=user if isinstance(user, str) else "",
            user_agent=ctx.user_agent,
            limited=ctx.limited,
            prompt_fingerprint=prompt_fingerprint(body, ctx.api_format, ctx.operation),
            response_format=response_format(body, ctx.api_format, ctx.operation),
            traffic="evaluator" if ctx.principal.evaluator else "user",
        )
