"""Token usage and stop reasons: the two facts every response ends with, in both vocabularies.

Anthropic counts cached prompt tokens apart from `input_tokens`; OpenAI counts them inside
`prompt_tokens` and breaks them out in `prompt_tokens_details`. Converting keeps the
totals equal, so cost and budget accounting agree whichever format the caller spoke.
"""

from __future__ import annotations

from typing import Any

# Anthropic stop_reason -> OpenAI finish_reason.
FINISH_REASON_FROM_ANTHROPIC = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# OpenAI finish_reason -> Anthropic stop_reason.
STOP_REASON_FROM_OPENAI = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def finish_reason_from_anthropic(stop_reason: str | None) -> str:
    return FINISH_REASON_FROM_ANTHROPIC.get(stop_reason or "end_turn", "stop")


def stop_reason_from_openai(finish_reason: str | None) -> str:
    return STOP_REASON_FROM_OPENAI.get(finish_reason or "stop", "end_turn")


def _count(usage: dict, key: str) -> int:
    value = usage.get(key)
    return value if isinstance(value, int) else 0


def anthropic_usage_to_openai(usage: dict[str, Any]) -> dict[str, Any]:
    """Anthropic usage -> OpenAI `CompletionUsage` (prompt_tokens includes cached tokens)."""
    cache_read = _count(usage, "cache_read_input_tokens")
    cache_write = _count(usage, "cache_creation_input_tokens")
    prompt = _count(usage, "input_tokens") + cache_read + cache_write
    completion = _count(usage, "output_tokens")
    details: dict[str, int] = {"cached_tokens": cache_read}
    if cache_write:
        details["cache_write_tokens"] = cache_write
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": details,
    }


def openai_usage_to_anthropic(usage: dict[str, Any]) -> dict[str, Any]:
    """OpenAI usage -> Anthropic `Usage` (input_tokens excludes cached tokens)."""
    details = usage.get("prompt_tokens_details") or {}
    cache_read = _count(details, "cached_tokens")
    cache_write = _count(details, "cache_write_tokens")
    return {
        "input_tokens": max(_count(usage, "prompt_tokens") - cache_read - cache_write, 0),
        "output_tokens": _count(usage, "completion_tokens"),
        "cache_creation_input_tokens": cache_write,
        "cache_read_input_tokens": cache_read,
    }
