"""The ASGI application: routes, lifespan, and the few non-pipeline endpoints."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import orjson
from starlette.applications import Starlette
from starlette.routing import Route

from gateway.config import SluiceConfig
from gateway.context import Endpoint
from gateway.http import header, send_bytes
from gateway.pipeline import handle
from gateway.runtime import Gateway
from gateway.types import Operation, Receive, Scope, Send, WireFormat


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
        from gateway.errors import GatewayError
        anthropic = header(scope, b"anthropic-version") is not None
        fmt = WireFormat.ANTHROPIC if anthropic else WireFormat.OPENAI
        try:
            principal = self._gw.keys.authenticate(scope["headers"])
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


class HealthEndpoint:
    """`/healthz`: the process serves. `/readyz`: start-up finished and it can take traffic."""

    def __init__(self, gw: Gateway, readiness: bool):
        self._gw = gw
        self._readiness = readiness

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._readiness and not self._gw.ready:
            await send_bytes(send, 503, b'{"status":"starting"}', [])
            return
        await send_bytes(send, 200, b'{"status":"ok"}', [])


def create_app(cfg: SluiceConfig) -> Starlette:
    gw = Gateway(cfg)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gw.start()
        try:
            yield
        finally:
            await gw.stop()

    def pipeline(op: Operation, fmt: WireFormat) -> PipelineEndpoint:
        return PipelineEndpoint(gw, Endpoint(op, fmt))

    routes = [
        Route("/v1/chat/completions", pipeline(Operation.CHAT, WireFormat.OPENAI), methods=["POST"]),
        Route("/v1/messages", pipeline(Operation.CHAT, WireFormat.ANTHROPIC), methods=["POST"]),
        Route("/v1/embeddings", pipeline(Operation.EMBEDDINGS, WireFormat.OPENAI), methods=["POST"]),
        Route("/v1/responses", pipeline(Operation.RESPONSES, WireFormat.OPENAI), methods=["POST"]),
        Route("/v1/models", ModelsEndpoint(gw), methods=["GET"]),
        Route("/healthz", HealthEndpoint(gw, readiness=False), methods=["GET"]),
        Route("/readyz", HealthEndpoint(gw, readiness=True), methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.gateway = gw
    return app
