"""The mock provider as a raw ASGI app: routing, auth, request log, faults, latency, pacing.

No framework on the request path: this app is the benchmark's baseline, so a request is
one dict lookup, one orjson parse, one endpoint call and one or a few `send` calls.

Endpoints (OpenAI, Azure OpenAI, Anthropic wire formats):
    POST /v1/chat/completions, /v1/embeddings, /v1/responses      OpenAI
    GET  /v1/models, /v1/models/{model}                           OpenAI
    POST /openai/deployments/{deployment}/chat/completions        Azure (api-version required)
    POST /openai/deployments/{deployment}/embeddings              Azure
    POST /v1/messages                                             Anthropic
Control API (tests and benchmarks; never recorded, never faulted):
    GET /_mock/health
    GET|DELETE /_mock/requests          the last requests received: method, path, query, headers, body, time
    GET|POST|DELETE /_mock/faults       POST replaces the rules with a JSON list (or one object), see faults.py
    GET|POST|DELETE /_mock/script       scripted answers (text, length, model, fingerprint, finish
                                        reason, latency) for chat and messages, see script.py
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from gateway.mock.anthropic_wire import messages
from gateway.mock.faults import FaultBook, FaultRule, fault_from_model
from gateway.mock.openai_wire import (
    chat_completions,
    embeddings,
    model_retrieve,
    models_list,
)
from gateway.mock.options import MockOptions
from gateway.mock.replies import Reply, Wire, data_event, error_reply, json_reply, named_event, openai_error
from gateway.mock.responses_wire import responses
from gateway.mock.script import Script, ScriptRule, delay_s, rewrite_reply, scripted_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Endpoint = Callable[[dict[str, Any], str, MockOptions], Reply]

POST_ROUTES: dict[str, tuple[Wire, Endpoint]] = {
    "/v1/chat/completions": ("openai", chat_completions),
    "/v1/embeddings": ("openai", embeddings),
    "/v1/responses": ("openai", responses),
    "/v1/messages": ("anthropic", messages),
}
AZURE_PREFIX = "/openai/deployments/"
AZURE_OPERATIONS: dict[str, Endpoint] = {"chat/completions": chat_completions, "embeddings": embeddings}
TIMEOUT_FAULT_SECONDS = 3600.0  # longer than any client timeout; a disconnect ends it sooner
_RULES = TypeAdapter(list[FaultRule])
_SCRIPT = TypeAdapter(list[ScriptRule])
SCRIPTABLE: tuple[Endpoint, ...] = (chat_completions, messages)


class MockUpstream:
    """The ASGI app; `faults` and `requests` are the state the control API exposes."""

    def __init__(self, options: MockOptions) -> None:
        self.options = options
        self.faults = FaultBook()
        self.script = Script()
        self.requests: deque[dict[str, Any]] = deque(maxlen=options.recorded_requests)
        self._created = int(time.time())
        self._models = models_list(options, self._created)
        self._pace = 1.0 / options.tokens_per_second if options.tokens_per_second > 0 else 0.0
        self._latency = options.latency_ms / 1000.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if scope["path"].startswith("/_mock/"):
                await self._control(scope, receive, send)
            else:
                await self._provider(scope, receive, send)
        elif scope["type"] == "lifespan":
            await _lifespan(receive, send)

    async def _provider(self, scope: Scope, receive: Receive, send: Send) -> None:
        """One provider request: record, authenticate, parse, apply a fault, answer."""
        path: str = scope["path"]
        method: str = scope["method"]
        raw = await _read_body(receive)
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        try:
            body: Any = orjson.loads(raw) if raw else None
            parsed = True
        except orjson.JSONDecodeError:
            body, parsed = raw.decode("utf-8", "replace"), False
        self.requests.append({"method": method, "path": path, "query": scope["query_string"].decode("latin-1"),
                              "headers": headers, "body": body, "time": time.time()})
        wire: Wire = "anthropic" if path == "/v1/messages" else "openai"
        if not self._authorized(headers):
            await _send_json(send, error_reply(wire, 401, "Incorrect API key provided."
                                               if wire == "openai" else "invalid x-api-key"))
            return

        endpoint: Endpoint | None = None
        model: str | None = None
        if method == "GET":
            reply = self._get(path)
            if reply is not None:
                await self._answer(reply, None, receive, send)
                return
        elif method == "POST":
            route = POST_ROUTES.get(path)
            if route is not None:
                endpoint = route[1]
            elif path.startswith(AZURE_PREFIX):
                model, _, operation = path[len(AZURE_PREFIX):].partition("/")
                endpoint = AZURE_OPERATIONS.get(operation)
                if endpoint is not None and b"api-version=" not in scope["query_string"]:
                    await _send_json(send, json_reply({"error": {"code": "404", "message": "Resource not found"}},
                                                      404))
                    return
        if endpoint is None:
            await _send_json(send, error_reply(wire, 404, f"Invalid URL ({method} {path})"))
            return
        if not parsed or not isinstance(body, dict):
            await _send_json(send, error_reply(wire, 400, "We could not parse the JSON body of your request. "
                                                          "The body must be a JSON object."))
            return
        if model is None:
            model = body.get("model")
            if not isinstance(model, str) or not model:
                await _send_json(send, error_reply(wire, 400, "you must provide a model parameter"
                                                   if wire == "openai" else "model: Field required"))
                return

        cut_after: int | None = None
        rule = self.faults.take(path, model) or fault_from_model(model)
        if rule is not None:
            if rule.delay_ms and await _disconnected_within(receive, rule.delay_ms / 1000.0):
                return
            if rule.mode == "status":
                reply = error_reply(wire, rule.status)
                if rule.retry_after is not None:
                    reply.headers = [*reply.headers, (b"retry-after", f"{rule.retry_after:g}".encode())]
                await _send_json(send, reply)
                return
            if rule.mode == "timeout":
                await _disconnected_within(receive, TIMEOUT_FAULT_SECONDS)
                await _close_connection(receive)
                return
            if rule.mode == "drop":
                await _close_connection(receive)
                return
            if rule.mode == "midstream_drop":
                cut_after = rule.after_events
            if rule.mode == "stream_error" and isinstance(body, dict) and body.get("stream") is True:
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"text/event-stream")]})
                await send({"type": "http.response.body", "body": _stream_error_event(wire)})
                return
        rule = self.script.match(model, raw) if self.script.rules and endpoint in SCRIPTABLE else None
        if rule is not None:
            reply = rewrite_reply(rule, endpoint(scripted_body(rule, body, raw), model, self.options))
            delay = delay_s(rule, raw)
            if delay and await _disconnected_within(receive, delay):
                return
            await self._answer(reply, cut_after, receive, send)
            return
        await self._answer(endpoint(body, model, self.options), cut_after, receive, send)

    def _get(self, path: str) -> Reply | None:
        if path == "/v1/models":
            return self._models
        if path.startswith("/v1/models/"):
            return model_retrieve(path[len("/v1/models/"):], self.options, self._created)
        return None

    def _authorized(self, headers: dict[str, str]) -> bool:
        key = self.options.api_key
        if key is None:
            return True
        return (headers.get("authorization") == "Bearer " + key or headers.get("x-api-key") == key
                or headers.get("api-key") == key)

    async def _answer(self, reply: Reply, cut_after: int | None, receive: Receive, send: Send) -> None:
        """Send a reply after the configured latency; pace streams; cut if a fault says so."""
        if self._latency and await _disconnected_within(receive, self._latency):
            return
        if reply.events is None:
            if cut_after is None:
                await _send_json(send, reply)
                return
            body = reply.body
            await send({"type": "http.response.start", "status": reply.status,
                        "headers": [*reply.headers, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
            await _close_connection(receive)
            return
        await send({"type": "http.response.start", "status": reply.status, "headers": reply.headers})
        pace = self._pace
        if not pace and cut_after is None:
            # unpaced: the whole stream in one write; per-event writes cost the baseline ~4x
            # its throughput, and a client sees the same bytes (pace the mock for per-event timing)
            await send({"type": "http.response.body", "body": b"".join(reply.events), "more_body": False})
            return
        for index, event in enumerate(reply.events):
            if cut_after is not None and index >= cut_after:
                await _close_connection(receive)
                return
            await send({"type": "http.response.body", "body": event, "more_body": True})
            if pace and await _disconnected_within(receive, pace):
                return
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _control(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The test-and-benchmark API under /_mock/."""
        path, method = scope["path"], scope["method"]
        raw = await _read_body(receive)
        reply: Reply
        if path == "/_mock/health":
            reply = json_reply({"status": "ok"})
        elif path == "/_mock/requests" and method == "GET":
            reply = json_reply(list(self.requests))
        elif path == "/_mock/requests" and method == "DELETE":
            count = len(self.requests)
            self.requests.clear()
            reply = json_reply({"cleared": count})
        elif path == "/_mock/faults" and method == "GET":
            reply = json_reply(self.faults.describe())
        elif path == "/_mock/faults" and method == "DELETE":
            self.faults.clear()
            reply = json_reply({"rules": 0})
        elif path == "/_mock/faults" and method == "POST":
            try:
                given = orjson.loads(raw)
                rules = _RULES.validate_python(given if isinstance(given, list) else [given])
            except (orjson.JSONDecodeError, ValidationError) as exc:
                reply = openai_error(400, f"invalid fault rules: {exc}")
            else:
                self.faults.replace(rules)
                reply = json_reply({"rules": len(rules)})
        elif path == "/_mock/script" and method == "GET":
            reply = json_reply(self.script.describe())
        elif path == "/_mock/script" and method == "DELETE":
            self.script.replace([])
            reply = json_reply({"rules": 0})
        elif path == "/_mock/script" and method == "POST":
            try:
                given = orjson.loads(raw)
                script = _SCRIPT.validate_python(given if isinstance(given, list) else [given])
            except (orjson.JSONDecodeError, ValidationError) as exc:
                reply = openai_error(400, f"invalid script rules: {exc}")
            else:
                self.script.replace(script)
                reply = json_reply({"rules": len(script)})
        else:
            reply = openai_error(404, f"Invalid URL ({method} {path})")
        await _send_json(send, reply)


def _stream_error_event(wire: Wire) -> bytes:
    if wire == "anthropic":
        return named_event("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    return data_event({"error": {"message": "The server is overloaded", "type": "server_error", "code": None}})


def create_mock_app(options: MockOptions | None = None) -> MockUpstream:
    """The mock provider app (an ASGI callable); state lives in the returned object."""
    return MockUpstream(options or MockOptions())


async def _read_body(receive: Receive) -> bytes:
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        return body
    parts = [body]
    while message.get("more_body"):
        message = await receive()
        parts.append(message.get("body", b""))
    return b"".join(parts)


async def _send_json(send: Send, reply: Reply) -> None:
    body = reply.body
    await send({"type": "http.response.start", "status": reply.status,
                "headers": [*reply.headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _disconnected_within(receive: Receive, seconds: float) -> bool:
    """Wait `seconds`, returning early (True) if the client disconnects meanwhile.

    Once the request body is read, `receive()` only returns when the client goes away,
    so waiting on it turns a disconnect into a prompt, clean end of the request.
    """
    try:
        message = await asyncio.wait_for(receive(), seconds)
    except TimeoutError:
        return False
    return message["type"] == "http.disconnect"


async def _close_connection(receive: Receive) -> None:
    """Close the TCP connection without finishing the response (drop faults).

    ASGI has no message for this, so it reaches the transport of uvicorn's request
    cycle (`receive` is its bound method); then it waits for the server to notice the
    disconnect, so uvicorn does not log an "incomplete response" error.
    """
    transport = getattr(getattr(receive, "__self__", None), "transport", None)
    if transport is None:
        raise ConnectionAbortedError("mock upstream fault: connection dropped on purpose")
    transport.close()
    await _disconnected_within(receive, 1.0)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
