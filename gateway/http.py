"""Raw ASGI request/response helpers for the hot path (no Request/Response objects)."""

from __future__ import annotations

import orjson

from gateway.errors import BadRequest, PayloadTooLarge
from gateway.types import JSON, Receive, Scope, Send
from gateway.wire.limits import nesting_within

JSON_CT = (b"content-type", b"application/json")
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
               (b"x-accel-buffering", b"no")]   # keep reverse proxies from buffering the stream


def header(scope: Scope, name: bytes) -> bytes | None:
    for k, v in scope["headers"]:
        if k == name:
            return v
    return None


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes")
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body"):
        if len(body) > limit:
            raise PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes")
        return body
    parts = [body]
    size = len(body)
    while message.get("more_body"):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequest("Client disconnected while sending the body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


def parse_json_object(raw: bytes, max_depth: int) -> JSON:
    """The body as a JSON object nested at most `max_depth` levels (`server.max_json_depth`).

    orjson reads 1024 levels but writes only 254: a deeper body would fail later, as a
    500, wherever it is written back (to the provider, the cache key, a trace)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"Request body is not valid JSON: {exc.msg} at position {exc.pos}") from None
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object")
    if not nesting_within(raw, body, max_depth):
        raise BadRequest(f"Request body is nested too deeply: the limit is {max_depth} levels of "
                         f"JSON objects and arrays")
    return body


async def send_bytes(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [JSON_CT, (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})
