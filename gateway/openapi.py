"""`GET /openapi.json`: an OpenAPI 3.1 description of every endpoint Sluice serves.

The request schemas say what Sluice itself checks (gateway/wire/), no more: a field they
leave open is passed through to the provider as sent, so `additionalProperties` stays
allowed, and a body they accept may still be refused by the provider (its 4xx comes back
as is). Limits come from the running gateway's configuration (gateway/wire/limits.py), so
the served document is true for that gateway. tests/gateway/test_openapi.py checks that
every served route is documented; tests/fuzz/ drives the gateway from this document.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.feedback_config import FeedbackConfig
from gateway.feedback_openapi import feedback_paths, feedback_schemas
from gateway.types import Receive, Scope, Send
from gateway.wire.anthropic import ANTHROPIC_ROLES
from gateway.wire.limits import OUTPUT_TOKENS_CEILING, RequestLimits
from gateway.wire.openai import OPENAI_ROLES

VERSION = "0.1.0"
_DEFAULT_FEEDBACK = FeedbackConfig()

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(*types: str, **extra: Any) -> Schema:
    return {"type": [*types, "null"], **extra}


def _json(schema: Schema) -> Schema:
    return {"application/json": {"schema": schema}}


_ERROR_TEXT = {
    400: "Malformed JSON, a wrong type, a missing field, or a request over a limit (the message names it)",
    401: "Missing or unknown gateway key",
    403: "This key may not use the model (or the caller is not local, for /sluice/report)",
    404: "Unknown model, or unknown URL",
    405: "Method not allowed on this path (the Allow header lists the allowed ones)",
    408: "The request's headers or body did not arrive in time (server.header_timeout_s, body_timeout_s)",
    413: "Body larger than server.max_body_bytes (or more text than guardrails.max_scan_chars)",
    429: "Rate limited (by the gateway: a key's or tenant's rpm / tpm / max_parallel, with Retry-After; or "
         "over budget, code insufficient_quota; or by a provider, passed on). Limited keys get "
         "x-ratelimit-* (OpenAI) or anthropic-ratelimit-* headers on every answer (docs/limits.md)",
    431: "Request header fields too large",
    502: "Every deployment failed; the message lists each attempt",
    503: "No deployment was available (circuit open, or all rate limited; may carry Retry-After), "
         "a guardrail failed closed, or the server is over a connection cap",
    504: "Every deployment timed out",
}
_PIPELINE_ERRORS = (400, 401, 403, 404, 413, 429, 502, 503, 504)
# Answered before a request reaches its endpoint (the router, the connection handling), in
# the caller's format as far as the request line and headers tell it.
_SERVER_ERRORS = (405, 408, 431)


def _server_errors() -> dict[str, Any]:
    return {str(s): {"description": _ERROR_TEXT[s], "content": _json(_ref("AnyError"))} for s in _SERVER_ERRORS}


def _errors(schema: str) -> dict[str, Any]:
    out = {str(s): {"description": _ERROR_TEXT[s], "content": _json(_ref(schema))} for s in _PIPELINE_ERRORS}
    return {**out, **_server_errors()}


def _schemas(limits: RequestLimits) -> dict[str, Schema]:
    tokens = {"minimum": 1, "maximum": OUTPUT_TOKENS_CEILING,
              "description": "At least 1; at most the model's `max_output_tokens` when configured"}
    model = {"type": "string", "minLength": 1, "description": "A public model name of this gateway"}
    number = _nullable("number")
    openai_messages = {
        "type": "array", "minItems": 1, "maxItems": limits.max_messages,
        "items": {"type": "object", "required": ["role"], "additionalProperties": True,
                  "properties": {"role": {"enum": sorted(OPENAI_ROLES)}, "content": {}}},
    }
    anthropic_messages = {
        "type": "array", "minItems": 1, "maxItems": limits.max_messages,
        "items": {"type": "object", "required": ["role"], "additionalProperties": True,
                  "properties": {"role": {"enum": sorted(ANTHROPIC_ROLES)}, "content": {}}},
    }
    usage = {"type": "object", "additionalProperties": True}
    return {
        "ChatCompletionRequest": {
            "type": "object", "required": ["model", "messages"], "additionalProperties": True,
            "description": f"OpenAI Chat Completions. JSON nested deeper than {limits.max_json_depth} "
                           "levels is refused; unknown fields are passed to the provider.",
            "properties": {
                "model": model, "messages": openai_messages, "stream": _nullable("boolean"),
                "n": _nullable("integer", minimum=1, maximum=limits.max_n),
                "max_tokens": _nullable("integer", **tokens),
                "max_completion_tokens": _nullable("integer", **tokens),
                "temperature": number, "top_p": number,
                "tools": _nullable("array", items={}), "stream_options": _nullable("object"),
            },
        },
        "MessagesRequest": {
            "type": "object", "required": ["model", "messages", "max_tokens"], "additionalProperties": True,
            "description": f"Anthropic Messages. JSON nested deeper than {limits.max_json_depth} levels "
                           "is refused; unknown fields are passed to the provider.",
            "properties": {
                "model": model, "messages": anthropic_messages,
                "max_tokens": {"type": "integer", **tokens}, "stream": _nullable("boolean"),
                "system": _nullable("string", "array"), "temperature": number,
                "tools": _nullable("array", items={}),
            },
        },
        "EmbeddingsRequest": {
            "type": "object", "required": ["model", "input"], "additionalProperties": True,
            "properties": {"model": model, "input": {"type": ["string", "array"]},
                           "stream": {"type": ["boolean", "null"], "enum": [False, None],
                                      "description": "Embeddings are not streamed"}},
        },
        "ResponsesRequest": {
            "type": "object", "required": ["model"], "additionalProperties": True,
            "description": "OpenAI Responses, passed through to OpenAI-type deployments.",
            "properties": {
                "model": model, "stream": _nullable("boolean"),
                "input": {"type": ["string", "array", "null"], "maxItems": limits.max_messages},
                "max_output_tokens": _nullable("integer", **tokens),
            },
        },
        "ChatCompletion": {
            "type": "object", "required": ["id", "object", "choices"], "additionalProperties": True,
            "properties": {
                "id": {"type": "string"}, "object": {"const": "chat.completion"}, "model": {"type": "string"},
                "created": {"type": "integer"},
                "choices": {"type": "array", "items": {
                    "type": "object", "required": ["index", "message"], "additionalProperties": True,
                    "properties": {"index": {"type": "integer"}, "message": {"type": "object"},
                                   "finish_reason": _nullable("string")}}},
                "usage": usage,
            },
        },
        "Message": {
            "type": "object", "required": ["id", "type", "role", "content"], "additionalProperties": True,
            "properties": {
                "id": {"type": "string"}, "type": {"const": "message"}, "role": {"const": "assistant"},
                "model": {"type": "string"}, "content": {"type": "array", "items": {"type": "object"}},
                "stop_reason": _nullable("string"), "usage": usage,
            },
        },
        "Embeddings": {
            "type": "object", "required": ["object", "data"], "additionalProperties": True,
            "properties": {
                "object": {"const": "list"}, "model": {"type": "string"}, "usage": usage,
                "data": {"type": "array", "items": {
                    "type": "object", "required": ["index", "embedding"], "additionalProperties": True,
                    "properties": {"index": {"type": "integer"},
                                   "embedding": {"type": ["array", "string"], "items": {"type": "number"}}}}},
            },
        },
        "Response": {
            "type": "object", "required": ["id", "object"], "additionalProperties": True,
            "properties": {"id": {"type": "string"}, "object": {"const": "response"},
                           "output": {"type": "array"}, "usage": usage},
        },
        "ModelList": {
            "anyOf": [
                {"type": "object", "required": ["object", "data"], "description": "OpenAI shape",
                 "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": {
                     "type": "object", "required": ["id", "object"],
                     "properties": {"id": {"type": "string"}, "object": {"const": "model"}}}}}},
                {"type": "object", "required": ["data", "has_more"],
                 "description": "Anthropic shape (with the anthropic-version header)",
                 "properties": {"has_more": {"type": "boolean"}, "data": {"type": "array", "items": {
                     "type": "object", "required": ["id", "type"],
                     "properties": {"id": {"type": "string"}, "type": {"const": "model"}}}}}},
            ],
        },
        "OpenAIError": {
            "type": "object", "required": ["error"],
            "properties": {"error": {
                "type": "object", "required": ["message", "type"],
                "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                               "param": _nullable("string"), "code": _nullable("string")}}},
        },
        "AnthropicError": {
            "type": "object", "required": ["type", "error"],
            "properties": {"type": {"const": "error"}, "error": {
                "type": "object", "required": ["type", "message"],
                "properties": {"type": {"type": "string"}, "message": {"type": "string"}}}},
        },
        "AnyError": {"anyOf": [_ref("OpenAIError"), _ref("AnthropicError")],
                     "description": "OpenAI shape, or Anthropic's for /v1/messages and anthropic-version callers"},
        "PlainError": {
            "type": "object", "required": ["error"],
            "properties": {"error": {"type": "object", "required": ["message"],
                                     "properties": {"message": {"type": "string"}}}},
        },
        "ServerSentEvent": {
            "type": "object", "required": ["data"],
            "description": "With `stream: true`, one server-sent event: `data` is a JSON chunk of the "
                           "caller's format (OpenAI ends with "
                           "`[DONE]`; Anthropic names each event); an upstream failure after the first "
                           "byte ends the stream with an error event",
            "properties": {"event": {"type": "string"}, "data": {"type": "string"}, "id": {"type": "string"}},
        },
        "Status": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
    }


# Before OpenAPI 3.2's itemSchema, an event stream's `schema` describes one event.
_SSE = {"text/event-stream": {"schema": _ref("ServerSentEvent")}}
_CACHE_HEADER = {"name": "x-sluice-cache", "in": "header", "required": False,
                 "description": "Per-request cache directive: no-cache, no-store, ttl=<seconds> (comma separated)",
                 "schema": {"type": "string"}}


def _proxy(summary: str, request: str, answer: str, errors: str, streams: bool) -> dict[str, Any]:
    ok = {"description": "The provider's answer, in this endpoint's format", "content": _json(_ref(answer))}
    if streams:
        ok["content"].update(_SSE)
    return {"post": {
        "summary": summary, "parameters": [_CACHE_HEADER],
        "requestBody": {"required": True, "content": _json(_ref(request))},
        "responses": {"200": ok, **_errors(errors)},
    }}


def _get(summary: str, responses: dict[str, Any], parameters: list[Schema] | None = None,
         security: bool = False) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {**responses, **_server_errors()}}
    if parameters:
        op["parameters"] = parameters
    if not security:
        op["security"] = []
    return {"get": op}


def _text(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}}


def build_document(limits: RequestLimits, admin: bool = False,
                   feedback: FeedbackConfig | None = _DEFAULT_FEEDBACK) -> dict[str, Any]:
    """`admin`: the gateway serves the admin API (admin.master_key), documented in
    gateway/admin_openapi.py. `feedback`: the config of `POST /v1/feedback` when it is
    served (telemetry on), documented in gateway/feedback_openapi.py."""
    status = {"description": "OK", "content": _json(_ref("Status"))}
    plain_error = {"content": _json(_ref("PlainError"))}
    paths = {
        "/v1/chat/completions": _proxy("OpenAI Chat Completions", "ChatCompletionRequest", "ChatCompletion",
                                       "OpenAIError", streams=True),
        "/v1/messages": _proxy("Anthropic Messages", "MessagesRequest", "Message", "AnthropicError", streams=True),
        "/v1/embeddings": _proxy("OpenAI Embeddings", "EmbeddingsRequest", "Embeddings", "OpenAIError",
                                 streams=False),
        "/v1/responses": _proxy("OpenAI Responses", "ResponsesRequest", "Response", "OpenAIError", streams=True),
        "/v1/models": _get(
            "The public models this key may use (Anthropic's shape with the anthropic-version header)",
            {"200": {"description": "The models", "content": _json(_ref("ModelList"))},
             "401": {"description": _ERROR_TEXT[401], "content": _json(_ref("AnyError"))}},
            [{"name": "anthropic-version", "in": "header", "required": False, "schema": {"type": "string"}}],
            security=True),
        "/healthz": _get("Liveness: the process serves", {"200": status}),
        "/readyz": _get("Readiness: start-up finished", {
            "200": status, "503": {"description": "Still starting", "content": _json(_ref("Status"))}}),
        "/metrics": _get("Prometheus metrics", {"200": _text("Prometheus text exposition format")}),
        "/sluice/report": _get(
            "The `sluice report` table (loopback callers only)",
            {"200": _text("The report"),
             "400": {"description": "A bad `since` or `by`", **plain_error},
             "403": {"description": "The caller is not on loopback", **plain_error},
             "503": {"description": "Telemetry is off, down or too slow", **plain_error}},
            [{"name": "since", "in": "query", "required": False, "schema": {"type": "string", "default": "1h"},
              "description": "How far back: 30m, 1h, 7d"},
             {"name": "by", "in": "query", "required": False,
              "schema": {"enum": ["model", "deployment", "tenant", "key"], "default": "model"}}]),
        "/openapi.json": _get("This document", {"200": {"description": "OpenAPI 3.1",
                                                        "content": _json({"type": "object"})}}),
    }
    schemas = _schemas(limits)
    if feedback is not None:
        paths.update(feedback_paths(_server_errors()))
        schemas.update(feedback_schemas(feedback))
    if admin:
        from gateway.admin_openapi import admin_paths, admin_schemas
        paths.update(admin_paths())
        schemas.update(admin_schemas())
    return {
        "openapi": "3.1.0",
        "info": {"title": "Sluice", "version": VERSION,
                 "description": "AI gateway: OpenAI and Anthropic wire formats in front of many providers. "
                                "Errors come in the caller's format (OpenAI `{\"error\": {...}}`, Anthropic "
                                "`{\"type\": \"error\", ...}`)."},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "Gateway key (OpenAI SDKs)"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key",
                           "description": "Gateway key (Anthropic SDKs)"},
            },
        },
        # Keys are optional: a gateway configured without `keys:` is open.
        "security": [{}, {"bearer": []}, {"apiKey": []}],
    }


class OpenAPIEndpoint:
    """`GET /openapi.json`, rendered once for the gateway's limits."""

    def __init__(self, limits: RequestLimits, admin: bool = False, feedback: FeedbackConfig | None = None):
        self._body = orjson.dumps(build_document(limits, admin, feedback))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(self._body)).encode())]})
        await send({"type": "http.response.body", "body": self._body})
