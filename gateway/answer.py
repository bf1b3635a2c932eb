"""Step 6-8 of the pipeline: route to a deployment and answer in the caller's format.

A complete answer is read (translated if the formats differ), passed through the output
guardrails and sent; a stream is relayed event by event, with fallback possible until
its first byte and an explicit error event if the upstream fails after that. Either way
the answer is queued for the cache when the request was a miss.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from cache import CacheLookup, CacheRequest
from cache.replay import anthropic_message_as_sse, openai_chat_as_sse
from gateway.context import RequestContext
from gateway.errors import BadRequest, BadUpstreamResponse, GatewayError, StreamInterrupted
from gateway.guard import GuardState, StreamGuard, guard_answer
from gateway.http import SSE_HEADERS, send_bytes
from gateway.providers import Usage
from gateway.routing import Deployment, ModelRoute
from gateway.streaming import StreamConverter
from gateway.translate import (
    TranslationError,
    anthropic_request_to_openai,
    anthropic_response_to_openai,
    openai_request_to_anthropic,
    openai_response_to_anthropic,
)
from gateway.types import JSON, Operation, Receive, Send, WireFormat
from gateway.upstream import UpstreamError
from gateway.wire import anthropic as anthropic_wire
from gateway.wire import openai as openai_wire

if TYPE_CHECKING:
    from gateway.runtime import Gateway

TAIL_GRACE_S = 1.0      # how long a finished stream may read the provider's tail after the caller left


def _eligible(ctx: RequestContext):
    if ctx.operation is Operation.CHAT:
        return None                                  # every deployment serves chat, translating if needed
    return lambda d: d.adapter.supports(ctx.operation)


def upstream_body(ctx: RequestContext, body: JSON, dep: Deployment) -> bytes:
    """The request in the deployment's format, for its upstream model."""
    provider = dep.adapter.wire_format
    try:
        if provider is ctx.api_format:
            out = dict(body)
            out["model"] = dep.upstream_model
            if ctx.stream and provider is WireFormat.OPENAI and ctx.operation is Operation.CHAT \
                    and not _caller_wants_usage(body):
                # Ask for usage so every stream is costed; the extra chunk is not forwarded.
                out["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
            return orjson.dumps(out)
        if ctx.api_format is WireFormat.OPENAI:
            return orjson.dumps(openai_request_to_anthropic(body, dep.upstream_model))
        return orjson.dumps(anthropic_request_to_openai(body, dep.upstream_model))
    except TranslationError as exc:
        raise BadRequest(f"Cannot send this request to deployment {dep.name}: {exc}") from None


def _caller_wants_usage(body: JSON) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


@dataclass(slots=True)
class CacheStore:
    """A cache miss to fill once the answer is known."""

    request: CacheRequest
    lookup: CacheLookup

    def schedule(self, gw: Gateway, answer: JSON, guard: GuardState | None) -> None:
        filtered = guard is not None and guard.modified_output
        gw.background(gw.cache.store(self.request, answer, self.lookup, output_filtered=filtered))


async def complete_answer(gw: Gateway, ctx: RequestContext, route: ModelRoute, body: JSON, send: Send,
                          guard: GuardState | None = None, store: CacheStore | None = None) -> None:
    async def attempt(dep: Deployment):
        req = dep.adapter.build(ctx.operation, upstream_body(ctx, body, dep), dep.upstream_model,
                                ctx.forward_headers)
        return await gw.upstream.send(req, dep.timeouts)

    dep, resp = await gw.router.run(route, attempt, ctx.attempts, eligible=_eligible(ctx))
    ctx.deployment = dep
    answer, out = read_answer(ctx, dep, resp.body)
    if guard is not None:
        guarded = await guard_answer(guard, ctx, answer)
        if guarded is not answer:
            out = orjson.dumps(guarded)
    await send_bytes(send, 200, out, ctx.response_headers())
    if store is not None:
        store.schedule(gw, answer, guard)


def read_answer(ctx: RequestContext, dep: Deployment, raw: bytes) -> tuple[JSON, bytes]:
    """Parse a complete answer into the caller's format (translating if the formats
    differ) and fill the summary; returns the answer and the bytes to send."""
    try:
        answer = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadUpstreamResponse(f"Deployment {dep.name} returned a body that is not JSON") from None
    if ctx.operation is not Operation.CHAT:
        ctx.summary.usage = dep.adapter.usage(answer)
        return answer, raw
    provider = dep.adapter.wire_format
    if provider is not ctx.api_format:
        try:
            answer = (anthropic_response_to_openai(answer, dep.upstream_model)
                      if ctx.api_format is WireFormat.OPENAI
                      else openai_response_to_anthropic(answer, dep.upstream_model))
            raw = orjson.dumps(answer)
        except orjson.JSONEncodeError:          # nested past what orjson writes (254 levels)
            raise BadUpstreamResponse(f"Deployment {dep.name} returned an answer nested too deeply") from None
    _summarize(ctx, answer)
    return answer, raw


def _summarize(ctx: RequestContext, answer: JSON) -> None:
    if ctx.api_format is WireFormat.OPENAI:
        openai_wire.read_chat_response(answer, ctx.summary)
    else:
        anthropic_wire.read_message(answer, ctx.summary)


async def answer_from_cache(ctx: RequestContext, answer: JSON, guard: GuardState | None, send: Send) -> None:
    """Serve a cached answer, replayed as a stream when the caller asked for one."""
    if ctx.operation is Operation.CHAT:
        _summarize(ctx, answer)
        ctx.summary.usage = Usage()                # nothing was spent upstream
        if guard is not None:
            answer = await guard_answer(guard, ctx, answer)
    if not ctx.stream:
        await send_bytes(send, 200, orjson.dumps(answer), ctx.response_headers())
        return
    if ctx.api_format is WireFormat.OPENAI:
        events = openai_chat_as_sse(answer, include_usage=_caller_wants_usage(ctx.params))
    else:
        events = anthropic_message_as_sse(answer)
    await send({"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, *ctx.response_headers()]})
    ctx.response_started = True
    ctx.ttft_ms = (time.perf_counter() - ctx.started) * 1000
    await send({"type": "http.response.body", "body": b"".join(events), "more_body": False})


async def stream_answer(gw: Gateway, ctx: RequestContext, route: ModelRoute, body: JSON, receive: Receive,
                        send: Send, guard: GuardState | None = None, store: CacheStore | None = None) -> None:
    async def attempt(dep: Deployment):
        # Fallback stays possible until the first upstream bytes arrive: read them here.
        req = dep.adapter.build(ctx.operation, upstream_body(ctx, body, dep), dep.upstream_model,
                                ctx.forward_headers)
        upstream = await gw.upstream.open_stream(req, dep.timeouts)
        chunks = upstream.chunks()
        try:
            first = await anext(chunks)
        except StopAsyncIteration:
            await upstream.aclose()
            raise UpstreamError("empty_stream") from None
        except BaseException:
            await upstream.aclose()
            raise
        if _is_error_event(first):
            # A 200 whose first event is an error (Anthropic's overloaded_error): nothing
            # reached the caller yet, so this is still a failed attempt to fall back from.
            await upstream.aclose()
            raise UpstreamError("stream_error_event")
        return upstream, chunks, first

    dep, (upstream, chunks, first) = await gw.router.run(route, attempt, ctx.attempts, hold=True,
                                                         eligible=_eligible(ctx))
    ctx.deployment = dep
    try:
        converter = None
        if ctx.operation is Operation.CHAT:
            converter = StreamConverter(ctx.api_format, dep.adapter.wire_format, dep.upstream_model, ctx.summary,
                                        drop_usage_chunk=not _caller_wants_usage(body),
                                        include_usage=_caller_wants_usage(body))
        stream_guard = StreamGuard(guard, ctx) if guard is not None and converter is not None else None
        await send({"type": "http.response.start", "status": 200,
                    "headers": [*SSE_HEADERS, *ctx.response_headers()]})
        ctx.response_started = True
        await _relay_until_disconnect(ctx, _relay(ctx, converter, stream_guard, first, chunks, send), receive)
        if store is not None and converter is not None and converter.done and ctx.error_type is None:
            store.schedule(gw, converter.assembled(), guard)
    finally:
        await upstream.aclose()
        gw.router.release(dep)


def _is_error_event(chunk: bytes) -> bool:
    head = chunk.lstrip()[:32]
    return head.startswith(b"event: error") or head.startswith(b'data: {"error"')


async def _relay(ctx: RequestContext, converter: StreamConverter | None, guard: StreamGuard | None,
                 first: bytes, chunks: AsyncIterator[bytes], send: Send) -> None:
    more = {"type": "http.response.body", "body": b"", "more_body": True}
    try:
        chunk = first
        while True:
            t0 = time.perf_counter()
            if converter is None:
                out = chunk                               # /v1/responses: bytes pass straight through
            elif guard is None:
                out = converter.feed(chunk)
            else:
                out = await guard.apply(converter.events(chunk))
            ctx.processing_ms += (time.perf_counter() - t0) * 1000
            if out:
                if ctx.ttft_ms is None:
                    ctx.ttft_ms = (time.perf_counter() - ctx.started) * 1000
                await send({**more, "body": out})
            if converter is not None and converter.done:
                # The caller has the whole answer; what follows upstream is the body's tail.
                ctx.answer_complete = True
                await _drain(chunks)
                break
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                break
        if converter is not None and not converter.done:
            raise UpstreamError("stream_truncated")
        if guard is not None:
            guard.finish_results()
    except UpstreamError as err:
        # After the first byte there is no fallback: end the stream with an explicit error.
        ctx.status, ctx.error_type = 502, f"stream_{err.outcome}"
        message = StreamInterrupted(f"Upstream stream from {ctx.deployment.name if ctx.deployment else '?'} "
                                    f"failed after it started: {err.outcome}")
        await send({**more, "body": stream_error_event(ctx, message)})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    """Read the upstream body to its end after the terminal event, so its connection goes
    back to the pool; a failure there cannot hurt an answer the caller already has."""
    try:
        async for _ in chunks:
            pass
    except UpstreamError:
        pass


async def _relay_until_disconnect(ctx: RequestContext, relay, receive: Receive) -> None:
    """Run the relay; if the client goes away first, cancel it (closing the upstream read).

    A client that leaves after the terminal event (the OpenAI SDK closes right after
    `[DONE]`) got a complete answer: the request succeeded, and the relay may take
    `TAIL_GRACE_S` to read the provider's tail before it is cut.
    """
    relay_task = asyncio.ensure_future(relay)
    disconnect_task = asyncio.ensure_future(receive())
    try:
        done, _ = await asyncio.wait({relay_task, disconnect_task}, return_when=asyncio.FIRST_COMPLETED)
        if relay_task not in done and ctx.answer_complete:
            done, _ = await asyncio.wait({relay_task}, timeout=TAIL_GRACE_S)
        if relay_task not in done:
            relay_task.cancel()
            await asyncio.gather(relay_task, return_exceptions=True)
            if not ctx.answer_complete:
                ctx.status, ctx.error_type = 499, "client_disconnected"
            return
        relay_task.result()
    finally:
        disconnect_task.cancel()
        if not relay_task.done():
            relay_task.cancel()


def stream_error_event(ctx: RequestContext, err: GatewayError) -> bytes:
    if ctx.api_format is WireFormat.ANTHROPIC:
        return anthropic_wire.stream_error_event(err)
    return openai_wire.stream_error_event(err)
