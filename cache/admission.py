"""Which answers may be cached at all.

A cache that stores a bad answer serves it again to every equivalent request for the whole
TTL, so anything that is not a complete, clean answer is refused: errors, truncation
(length / max_tokens), provider content filters and refusals, and answers the gateway's
output guardrails rewrote or blocked.
"""

from __future__ import annotations

from typing import Any

_OPENAI_BAD_FINISH = frozenset({"length", "content_filter"})
_ANTHROPIC_BAD_STOP = frozenset({"max_tokens", "refusal", "model_context_window_exceeded"})


def temperature_allowed(body: dict[str, Any], max_temperature: float | None) -> bool:
    if max_temperature is None:
        return True
    temperature = body.get("temperature")
    if temperature is None:
        temperature = 1.0  # both OpenAI's and Anthropic's default
    try:
        return float(temperature) <= max_temperature
    except (TypeError, ValueError):
        return False


def refusal_reason(response: dict[str, Any], api_format: str, operation: str) -> str | None:
    """Why `response` must not be stored, or None if it may be."""
    if not isinstance(response, dict):
        return "not_an_object"
    if "error" in response or response.get("type") == "error":
        return "error"
    if operation == "embeddings":
        return None if isinstance(response.get("data"), list) and response["data"] else "empty"
    if api_format == "anthropic":
        if response.get("type") != "message" or not response.get("content"):
            return "empty"
        if response.get("stop_reason") in _ANTHROPIC_BAD_STOP or response.get("stop_reason") is None:
            return "incomplete"
        return None
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices:
        return "empty"
    for choice in choices:
        finish = choice.get("finish_reason")
        if finish is None or finish in _OPENAI_BAD_FINISH:
            return "incomplete"
        message = choice.get("message") or {}
        if message.get("refusal"):
            return "refusal"
    return None
