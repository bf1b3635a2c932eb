"""One request, top to bottom.

    authenticate -> read + validate -> resolve model -> limits and budget (reserve)
    -> input guardrails -> cache lookup -> route (retries, fallback) -> answer (complete or
    streamed, in the caller's format) -> output guardrails -> cache store -> record and
    settle the reservation (off the hot path)

Chat completions, Anthropic messages, embeddings and responses all run through
`handle`; what differs between them is data (`Endpoint`) and the wire-format modules.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from gateway import caching
from gateway.answer import (
    CacheStore,
    answer_from_cache,
    complete_answer,
    stream_answer,
    stream_error_event,
)
from gateway.context import CACHE_HITS, Endpoint, RequestContext
from gateway.errors import BadRequest, GatewayError, ModelNotFound
from gateway.guard import GuardState, guard_input
from gateway.http import header, parse_json_object, read_body, send_bytes
from gateway.routing import ModelRoute
from gateway.types import Operation, Receive, Scope, Send, WireFormat
from gateway.wire import anthropic as anthropic_wire
from gateway.wire import openai as openai_wire

if TYPE_CHECKING:
    from gateway.runtime import Gateway

logger = logging.getLogger("sluice.pipeline")

VALIDATORS = {
    Endpoint(Operation.CHAT, WireFormat.OPENAI): openai_wire.validate_chat,
    Endpoint(Operation.CHAT, WireFormat.ANTHROPIC): anthropic_wire.validate_messages,
    Endpoint(Operation.EMBEDDINGS, WireFormat.OPENAI): openai_wire.validate_embeddings,
    Endpoint(Operation.RESPONSES, WireFormat.OPENAI): openai_wire.validate_responses,
}
_FORWARDED_ANTHROPIC_HEADERS = (b"anthropic-version", b"anthropic-beta")


class InternalError(GatewayError):
    status, type, code = 500, "server_error", "internal_error"


async def handle(gw: Gateway, endpoint: Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
    ctx = RequestContext(endpoint, path=scope["path"])
    gw.begin(ctx, scope)
    try:
        # 1. who is calling
        if gw.keys.checks_keys:
            t0 = time.perf_counter()
            keys = gw.keys
            ctx.principal = (await keys.authenticate_async(scope["headers"]) if keys.dynamic
                             else keys.authenticate(scope["headers"]))
            ctx.steps.append(("sluice.auth", t0, time.perf_counter(), None))
        # 2. what they ask, in their wire format
        limits = gw.limits
        body = parse_json_object(await read_body(scope, receive, gw.cfg.server.max_body_bytes),
                                 limits.max_json_depth)
        ctx.public_model = VALIDATORS[endpoint](body, limits)
        ctx.body = body
        ctx.user_agent = (header(scope, b"user-agent") or b"").decode("latin-1")
        ctx.stream = body.get("stream") is True
        if endpoint.api_format is WireFormat.ANTHROPIC:
            ctx.forward_headers = _forwarded_headers(scope)
        # 3. which model, and may they use it
        route = resolve_route(gw, ctx)
        # 3b. rate limits and budget of the key and its tenant: one atomic reserve (429 if over)
        evaluator = ctx.principal.evaluator          # the monitor's own calls: no limits, no cache
        if gw.quota.active and not evaluator:
            t0 = time.perf_counter()
            await gw.quota.admit(ctx, route, body)
            ctx.steps.append(("sluice.limits", t0, time.perf_counter(), None))
        # 4. input guardrails: block, or rewrite what the provider will see
        guard: GuardState | None = None
        policy = gw.guardrail_policy(ctx)
        if policy is not None:
            body, guard = await guard_input(gw.guardrails, policy, ctx, body)
            ctx.body = body
        # 5. cache lookup, keyed by the request as the provider would see it
        store: CacheStore | None = None
        if gw.cache is not None and evaluator:
            ctx.cache_status = "bypass"
        elif gw.cache is not None:
            creq = caching.cache_request(ctx, scope, body, policy.version if policy else "")
            if creq is not None:
                found = await caching.lookup(gw.cache, ctx, creq)
                if found.status in CACHE_HITS:
                    await answer_from_cache(ctx, found.response, guard, send)
                    return
                store = CacheStore(creq, found)
        # 6. route to a deployment; 7. answer, output guardrails; 8. cache store
        if ctx.stream:
            await stream_answer(gw, ctx, route, body, receive, send, guard, store)
        else:
            await complete_answer(gw, ctx, route, body, send, guard, store)
    except GatewayError as err:
        await send_error(ctx, err, send)
    except Exception:
        logger.exception("unhandled error in request %s", ctx.request_id)
        await send_error(ctx, InternalError("Internal gateway error (request id %s)" % ctx.request_id), send)
    finally:
        ctx.finished = time.perf_counter()
        gw.record(ctx)
        if ctx.reservation is not None:
            gw.quota.settle(ctx)                  # usage replaces the estimate, queued


def resolve_route(gw: Gateway, ctx: RequestContext) -> ModelRoute:
    route = gw.router.routes.get(ctx.public_model)
    if route is None:
        raise ModelNotFound(f"The model '{ctx.public_model}' does not exist", param="model")
    ctx.principal.check_model(ctx.public_model)              # 403 when the key may not use it
    if ctx.operation is not Operation.CHAT and not any(d.adapter.supports(ctx.operation) for d in route.deployments):
        raise BadRequest(f"Model '{ctx.public_model}' has no deployment that serves {ctx.operation.value}",
                         param="model")
    return route


def _forwarded_headers(scope: Scope) -> dict[str, str] | None:
    found = {k.decode(): v.decode("latin-1") for k, v in scope["headers"] if k in _FORWARDED_ANTHROPIC_HEADERS}
    return found or None


async def send_error(ctx: RequestContext, err: GatewayError, send: Send) -> None:
    ctx.status = err.status
    ctx.error_type = err.code or err.type
    if ctx.response_started:
        await send({"type": "http.response.body", "body": stream_error_event(ctx, err), "more_body": False})
        return
    headers = ctx.response_headers() + [(k.encode(), v.encode()) for k, v in err.headers.items()]
    await send_bytes(send, err.status, err.body(ctx.api_format), headers)
