"""Request and response bodies shared by the cache tests."""

from __future__ import annotations

from typing import Any

from cache import CacheRequest


def chat(
    question: str,
    *,
    tenant: str = "acme",
    model: str = "chat-default",
    system: str | None = "You are a helpful assistant.",
    directive: str | None = None,
    policy_version: str = "p1",
    **params: Any,
) -> CacheRequest:
    messages: list[dict[str, Any]] = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": question})
    body = {"model": model, "messages": messages, "temperature": 0, **params}
    return CacheRequest(tenant, model, "openai", "chat", body, directive, policy_version)


def completion(text: str, finish_reason: str = "stop", **message: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None, **message},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
    }


def anthropic_message(text: str, stop_reason: str = "end_turn") -> dict[str, Any]:
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": text}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 4},
    }
