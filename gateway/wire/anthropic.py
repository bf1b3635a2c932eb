"""Anthropic Messages, as callers send and receive them."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import GatewayError, anthropic_error_type
from gateway.providers.anthropic import usage_from_anthropic
from gateway.sse import anthropic_event
from gateway.types import JSON
from gateway.wire.limits import RequestLimits, check_count, check_output_tokens
from gateway.wire.summary import ResponseSummary
from gateway.wire.validation import expect, require, require_messages, require_model

ANTHROPIC_ROLES = frozenset({"user", "assistant"})


def validate_messages(body: JSON, limits: RequestLimits) -> str:
    model = require_model(body)
    check_count(require(body, "messages", list), "messages", limits)     # before walking them
    require_messages(body, ANTHROPIC_ROLES)
    check_output_tokens(require(body, "max_tokens", int), "max_tokens", model, limits)
    expect(body, "stream", bool)
    expect(body, "system", (str, list))
    expect(body, "temperature", (int, float))
    expect(body, "tools", list)
    return model


def read_message(resp: JSON, summary: ResponseSummary) -> None:
    summary.usage = usage_from_anthropic(resp.get("usage"))
    summary.response_id = resp.get("id")
    summary.response_model = resp.get("model")
    summary.finish_reason = resp.get("stop_reason")
    for block in resp.get("content") or ():
        if block.get("type") == "text":
            summary.text_parts.append(block.get("text", ""))
    summary.complete = True


class MessageStreamReader:
    """Follows Anthropic stream events; rebuilds the complete message for the cache."""

    def __init__(self, summary: ResponseSummary):
        self.summary = summary
        self._message: JSON | None = None
        self._blocks: dict[int, dict[str, Any]] = {}
        self._usage: JSON = {}

    def feed(self, event: JSON) -> None:
        kind = event.get("type")
        s = self.summary
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            block = self._blocks.get(event.get("index", 0))
            if delta.get("type") == "text_delta":
                text = delta.get("text", "")
                s.text_parts.append(text)
                if block is not None:
                    block.setdefault("_text", []).append(text)
            elif delta.get("type") == "input_json_delta" and block is not None:
                block.setdefault("_json", []).append(delta.get("partial_json", ""))
        elif kind == "content_block_start":
            self._blocks[event.get("index", 0)] = dict(event.get("content_block") or {})
        elif kind == "message_start":
            self._message = dict(event.get("message") or {})
            self._usage = dict(self._message.get("usage") or {})
            s.response_id = self._message.get("id")
            s.response_model = self._message.get("model")
        elif kind == "message_delta":
            delta = event.get("delta") or {}
            if delta.get("stop_reason"):
                s.finish_reason = delta["stop_reason"]
            self._usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
        elif kind == "message_stop":
            s.complete = True
        s.usage = usage_from_anthropic(self._usage)

    def assembled(self) -> JSON:
        message = dict(self._message or {})
        content = []
        for idx in sorted(self._blocks):
            block = {k: v for k, v in self._blocks[idx].items() if not k.startswith("_")}
            if block.get("type") == "text":
                block["text"] = "".join(self._blocks[idx].get("_text", ()))
            elif block.get("type") == "tool_use" and self._blocks[idx].get("_json"):
                block["input"] = orjson.loads("".join(self._blocks[idx]["_json"]) or "{}")
            content.append(block)
        message.update(content=content, stop_reason=self.summary.finish_reason, usage=self._usage)
        return message


def stream_error_event(err: GatewayError) -> bytes:
    # The anthropic SDK raises on an `error` event.
    return anthropic_event("error", {"type": "error", "error": {"type": anthropic_error_type(err.status),
                                                                "message": err.message}})


def prompt_text(body: JSON) -> str:
    parts: list[str] = []
    system = body.get("system")
    if isinstance(system, str):
        parts.append(f"system: {system}")
    elif isinstance(system, list):
        parts.append("system: " + " ".join(b.get("text", "") for b in system if isinstance(b, dict)))
    for m in body.get("messages") or ():
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, str):
            parts.append(f"{m.get('role')}: {content}")
        elif isinstance(content, list):
            texts = [b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text"]
            parts.append(f"{m.get('role')}: {' '.join(texts)}")
    return "\n".join(parts)
