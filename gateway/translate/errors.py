"""Errors of the translation layer and the error vocabularies of both wire formats.

    TranslationError (ValueError)   the caller's request has no faithful form in the
                                    target wire format; the gateway answers 400 in the
                                    caller's format, before any upstream call.

The helpers below name an HTTP status in each format's error vocabulary and reshape an
upstream error body into the caller's format, so a provider's 429 reaches an OpenAI
caller as an OpenAI error and an Anthropic caller as an Anthropic error.
"""

from __future__ import annotations

from typing import Any


class TranslationError(ValueError):
    """The request cannot be expressed in the target format (the gateway answers 400)."""


_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
    503: "overloaded_error",
}

_OPENAI_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


def anthropic_error_type(status: int) -> str:
    """The Anthropic `error.type` for an HTTP status."""
    if status in _ANTHROPIC_TYPES:
        return _ANTHROPIC_TYPES[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def openai_error_type(status: int) -> str:
    """The OpenAI `error.type` for an HTTP status."""
    if status in _OPENAI_TYPES:
        return _OPENAI_TYPES[status]
    return "server_error" if status >= 500 else "invalid_request_error"


def _message_of(body: Any) -> str:
    """The human message inside either format's error body, or a fallback."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
        if isinstance(error, str):
            return error
    return "upstream provider error"


def anthropic_error_to_openai(body: Any, status: int) -> dict:
    """An Anthropic error body (`{"type": "error", "error": {...}}`) as an OpenAI error body."""
    return {
        "error": {
            "message": _message_of(body),
            "type": openai_error_type(status),
            "param": None,
            "code": None,
        }
    }


def openai_error_to_anthropic(body: Any, status: int) -> dict:
    """An OpenAI error body (`{"error": {...}}`) as an Anthropic error body."""
    return {
        "type": "error",
        "error": {"type": anthropic_error_type(status), "message": _message_of(body)},
    }


def shape_error(exc: Exception) -> str:
    """A malformed request's fault in the caller's terms, not Python's (no exception names)."""
    if isinstance(exc, KeyError):
        return f"missing field {exc.args[0]!r}"
    if isinstance(exc, (TypeError, AttributeError)):
        return "a field has the wrong type (an object, array, string or number where another was expected)"
    return "a field has an invalid value"
