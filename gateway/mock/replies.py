"""What a mock endpoint hands back to the server loop, and the providers' error shapes.

Endpoints build a `Reply` (a JSON body, or a list of ready SSE events) and do no I/O, so
the server loop alone applies latency, pacing and injected faults.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

Wire = Literal["openai", "anthropic"]
Headers = list[tuple[bytes, bytes]]

JSON_HEADERS: Headers = [(b"content-type", b"application/json")]
SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]


@dataclass(slots=True)
class Reply:
    """A complete answer: `body` for JSON, or `events` for a server-sent event stream."""

    status: int = 200
    body: bytes = b""
    events: list[bytes] | None = None
    headers: Headers = field(default_factory=lambda: JSON_HEADERS)


def json_reply(payload: Any, status: int = 200) -> Reply:
    return Reply(status=status, body=orjson.dumps(payload))


def stream_reply(events: list[bytes]) -> Reply:
    return Reply(events=events, headers=SSE_HEADERS)


def data_event(payload: Any) -> bytes:
    """An OpenAI-style SSE event: only a data line."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def named_event(name: str, payload: Any) -> bytes:
    """An Anthropic / Responses-style SSE event: an event line, then the data line."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def new_id(prefix: str) -> str:
    """A provider-looking id (`chatcmpl-...`, `msg_...`) that is unique per response."""
    return prefix + os.urandom(12).hex()


_OPENAI_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_denied",
                 404: "invalid_request_error", 409: "invalid_request_error", 422: "invalid_request_error",
                 429: "requests"}
_OPENAI_CODES = {401: "invalid_api_key", 429: "rate_limit_exceeded"}
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                    529: "overloaded_error"}
_MESSAGES = {401: "Incorrect API key provided.", 429: "Rate limit reached for requests.",
             500: "The server had an error while processing your request.",
             502: "Bad gateway.", 503: "The engine is currently overloaded, please try again later.",
             529: "Overloaded"}


def openai_error(status: int, message: str, *, type_: str | None = None, param: str | None = None,
                 code: str | None = None) -> Reply:
    """OpenAI's (and Azure's) error body: {"error": {message, type, param, code}}."""
    error_type = type_ or _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return json_reply({"error": {"message": message, "type": error_type, "param": param,
                                 "code": code if code is not None else _OPENAI_CODES.get(status)}}, status)


def anthropic_error(status: int, message: str, *, type_: str | None = None) -> Reply:
    """Anthropic's error body: {"type": "error", "error": {type, message}}."""
    error_type = type_ or _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return json_reply({"type": "error", "error": {"type": error_type, "message": message}}, status)


def error_reply(wire: Wire, status: int, message: str | None = None) -> Reply:
    """An error in the wire format of the endpoint that was called."""
    text = message or _MESSAGES.get(status, f"Mock upstream error {status}.")
    if wire == "anthropic":
        return anthropic_error(status, text)
    return openai_error(status, text)
