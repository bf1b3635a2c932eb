"""The ASGI application: routes, lifespan, and the few non-pipeline endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import AsyncIterator
from urllib.parse import parse_qs

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.admin import admin_routes
from gateway.config import SluiceConfig
from gateway.context import Endpoint
from gateway.errors import GatewayError, MethodNotAllowed, NotFound
from gateway.feedback_endpoint import FeedbackEndpoint
from gateway.http import header, send_bytes
from gateway.openapi import OpenAPIEndpoint
from gateway.pipeline import handle
from gateway.runtime import Gateway
from gateway.types import ASGIApp, Operation, Receive, Scope, Send, WireFormat
from telemetry.schema_gate import SchemaGate


class PipelineEndpoint:
    """An ASGI endpoint that runs the pipeline for one (operation, format)."""

    def __init__(self, gw: Gateway, endpoint: Endpoint):
        self._gw = gw
        self._endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await handle(self._gw, self._endpoint, scope, receive, send)


class ModelsEndpoint:
    """`GET /v1/models`: the public models this caller may use, in the caller's format."""

    def __init__(self, gw: Gateway):
        self._gw = gw

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        anthropic = header(scope, b"anthropic-version") is not None
        fmt = WireFormat.ANTHROPIC if anthropic else WireFormat.OPENAI
        try:
            principal = await self._gw.keys.authenticate_async(scope["headers"])
        except GatewayError as err:
            await send_bytes(send, err.status, err.body(fmt), [])
            return
        names = [m for m in self._gw.cfg.models if principal.allows(m)]
        if anthropic:
            data = [{"type": "model", "id": m, "display_name": m, "created_at": "1970-01-01T00:00:00Z"}
                    for m in names]
            body = {"data": data, "has_more": False, "first_id": names[0] if names else None,
                    "last_id": names[-1] if names else None}
        else:
            body = {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "sluice"}
                                               for m in names]}
        await send_bytes(send, 200, orjson.dumps(body), [])


class MetricsEndpoint:
    """`GET /metrics` in the Prometheus text format."""

    def __init__(self, gw: Gateway):
        self._gw = gw

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        telemetry = self._gw.telemetry
        if telemetry.client is not None and telemetry.client.shared:    # --workers: all of them
            body, content_type = await asyncio.to_thread(telemetry.render_metrics)
        else:
            body, content_type = telemetry.metrics.render()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", content_type.encode()),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class OpsAccess:
    """The gate of an operational endpoint (`/metrics`, `/sluice/*`): they show every tenant.

    With `server.ops_token` set only `Authorization: Bearer <token>` passes, whoever the
    peer is (a reverse proxy on the same host makes every caller look local). Without it,
    `loopback_only` endpoints answer this host's callers only, as before a token existed.
    """

    def __init__(self, app: ASGIApp, token: str | None, *, loopback_only: bool):
        self._app = app
        self._expected = f"Bearer {token}".encode() if token else None
        self._loopback_only = loopback_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._expected is not None:
            given = header(scope, b"authorization") or b""
            if not hmac.compare_digest(given, self._expected):
                await send_bytes(send, 401, orjson.dumps({"error": {
                    "message": "this endpoint needs Authorization: Bearer <server.ops_token>",
                    "type": "authentication_error", "param": None, "code": "invalid_ops_token"}}),
                    [(b"www-authenticate", b"Bearer")])
                return
        elif self._loopback_only and (scope.get("client") or ("",))[0] not in ("127.0.0.1", "::1", "localhost"):
            await send_bytes(send, 403, orjson.dumps({"error": {
                "message": "served to loopback callers only; set server.ops_token to serve it to others",
                "type": "permission_error", "param": None, "code": "ops_loopback_only"}}), [])
            return
        await self._app(scope, receive, send)


class ReportEndpoint:
    """`GET /sluice/report?since=1h&by=model`: the `sluice report` table.

    chDB lets one process open its directory; while the gateway runs on the embedded
    default, `sluice report` asks it here. Aggregates span tenants: behind `OpsAccess`.
    """

    def __init__(self, gw: Gateway):
        self._gw = gw

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        query = {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
        try:
            text = await asyncio.to_thread(self._gw.report, query.get("since", "1h"), query.get("by", "model"))
        except ValueError as exc:
            await send_bytes(send, 400, orjson.dumps({"error": {"message": str(exc)}}), [])
            return
        except RuntimeError as exc:          # the telemetry collector is down or too slow
            await send_bytes(send, 503, orjson.dumps({"error": {"message": str(exc)}}), [])
            return
        body = text.encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class HealthEndpoint:
    """`/healthz`: the process serves. `/readyz`: start-up finished and it can take traffic,
    on a ClickHouse schema no older than it needs (telemetry/schema_gate.py)."""

    def __init__(self, gw: Gateway, readiness: bool, schema_gate: SchemaGate | None = None):
        self._gw = gw
        self._readiness = readiness
        self._schema_gate = schema_gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._readiness and not self._gw.ready:
            await send_bytes(send, 503, b'{"status":"starting"}', [])
            return
        if self._readiness and self._schema_gate is not None and self._schema_gate.problem:
            body = orjson.dumps({"status": "schema_behind", "detail": self._schema_gate.problem})
            await send_bytes(send, 503, body, [])
            return
        await send_bytes(send, 200, b'{"status":"ok"}', [])


def caller_format(scope: Scope) -> WireFormat:
    """The wire format to answer in outside the pipeline: Anthropic for its endpoint or
    when the SDK's `anthropic-version` header is there, else OpenAI."""
    if scope["path"].startswith("/v1/messages") or header(scope, b"anthropic-version") is not None:
        return WireFormat.ANTHROPIC
    return WireFormat.OPENAI


async def routing_error(request: Request, exc: Exception) -> Response:
    """404 / 405 from Starlette's router, in the caller's wire format (SDKs parse these too)."""
    method, path = request.method, request.url.path
    headers = dict(getattr(exc, "headers", None) or {})
    if getattr(exc, "status_code", 404) == 405:
        err: GatewayError = MethodNotAllowed(f"Method {method} is not allowed on {path}; "
                                             f"use {headers.get('allow', headers.get('Allow', 'POST'))}")
    else:
        err = NotFound(f"Unknown request URL: {method} {path}")
    return Response(err.body(caller_format(request.scope)), err.status, headers=headers,
                    media_type="application/json")


HEALTH_PATHS = ("/healthz", "/readyz")


class HotPathRouter:
    """The outermost ASGI app: proxy endpoints go straight to the pipeline by exact path.

    Starlette's router and its two exception middlewares cost a measurable share of a
    proxied request (docs/benchmarks.md) and add nothing here: the pipeline catches and
    renders its own errors in the caller's format. Everything else (lifespan, health,
    metrics, 404s) goes through Starlette as usual.
    """

    def __init__(self, app: Starlette, routes: dict[str, PipelineEndpoint], ops_port: int | None = None):
        self.app = app
        self.state = app.state
        self._routes = routes
        self._ops_port = ops_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if self._ops_port is not None and not self._served_on_this_port(scope):
                err = NotFound(f"Unknown request URL: {scope['method']} {scope['path']} on this port")
                await send_bytes(send, err.status, err.body(caller_format(scope)), [])
                return
            if scope["method"] == "POST":
                endpoint = self._routes.get(scope["path"])
                if endpoint is not None:
                    await endpoint(scope, receive, send)
                    return
        await self.app(scope, receive, send)

    def _served_on_this_port(self, scope: Scope) -> bool:
        """With `server.ops_port`, /metrics and /sluice/* live there alone (health on both)."""
        path = scope["path"]
        if path in HEALTH_PATHS:
            return True
        ops_path = path == "/metrics" or path.startswith("/sluice/")
        return ops_path == ((scope.get("server") or ("", None))[1] == self._ops_port)


def create_app(cfg: SluiceConfig) -> HotPathRouter:
    gw = Gateway(cfg)
    schema_gate = SchemaGate.from_config(cfg.telemetry, cfg.resolved_data_dir())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gw.start()
        await asyncio.to_thread(schema_gate.check)          # before the first request is accepted
        watch = None if schema_gate.settled else asyncio.ensure_future(schema_gate.watch())
        try:
            yield
        finally:
            if watch is not None:
                watch.cancel()
            await gw.stop()

    def pipeline(op: Operation, fmt: WireFormat) -> PipelineEndpoint:
        return PipelineEndpoint(gw, Endpoint(op, fmt))

    ops_token = cfg.server.ops_token
    proxied = {
        "/v1/chat/completions": pipeline(Operation.CHAT, WireFormat.OPENAI),
        "/v1/messages": pipeline(Operation.CHAT, WireFormat.ANTHROPIC),
        "/v1/embeddings": pipeline(Operation.EMBEDDINGS, WireFormat.OPENAI),
        "/v1/responses": pipeline(Operation.RESPONSES, WireFormat.OPENAI),
    }
    routes = [
        *(Route(path, endpoint, methods=["POST"]) for path, endpoint in proxied.items()),
        Route("/v1/models", ModelsEndpoint(gw), methods=["GET"]),
        # POST /v1/feedback: ratings of answers, stored in ClickHouse (served while telemetry is on)
        *([Route("/v1/feedback", FeedbackEndpoint(gw), methods=["POST"])] if gw.feedback is not None else []),
        Route("/metrics", OpsAccess(MetricsEndpoint(gw), ops_token, loopback_only=False), methods=["GET"]),
        Route("/sluice/report", OpsAccess(ReportEndpoint(gw), ops_token, loopback_only=True), methods=["GET"]),
        Route("/healthz", HealthEndpoint(gw, readiness=False), methods=["GET"]),
        Route("/readyz", HealthEndpoint(gw, readiness=True, schema_gate=schema_gate), methods=["GET"]),
        Route("/openapi.json", OpenAPIEndpoint(gw.limits, admin=bool(cfg.admin.master_key),
                                               feedback=cfg.feedback if gw.feedback is not None else None),
              methods=["GET"]),
        *admin_routes(gw),                                   # /admin/*: only with admin.master_key
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={404: routing_error, 405: routing_error})
    app.state.gateway = gw
    return HotPathRouter(app, proxied, cfg.server.ops_port)
