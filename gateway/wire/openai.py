"""OpenAI Chat Completions / Embeddings / Responses, as callers send and receive them."""

from __future__ import annotations

from typing import Any

from gateway.errors import BadRequest, GatewayError
from gateway.providers.openai import usage_from_openai
from gateway.sse import openai_event
from gateway.types import JSON
from gateway.wire.limits import RequestLimits, check_count, check_n, check_output_tokens
from gateway.wire.summary import ResponseSummary
from gateway.wire.validation import expect, require, require_messages, require_model

OPENAI_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def validate_chat(body: JSON, limits: RequestLimits) -> str:
    model = require_model(body)
    check_count(require(body, "messages", list), "messages", limits)     # before walking them
    require_messages(body, OPENAI_ROLES)
    expect(body, "stream", bool)
    check_n(expect(body, "n", int), limits)
    check_output_tokens(expect(body, "max_tokens", int), "max_tokens", model, limits)
    check_output_tokens(expect(body, "max_completion_tokens", int), "max_completion_tokens", model, limits)
    expect(body, "temperature", (int, float))
    expect(body, "top_p", (int, float))
    expect(body, "tools", list)
    expect(body, "stream_options", dict)
    return model


def validate_embeddings(body: JSON, limits: RequestLimits) -> str:
    model = require_model(body)
    require(body, "input", (str, list))
    # Embeddings have no stream: `stream: true` was answered as an event stream of one JSON body.
    if expect(body, "stream", bool):
        raise BadRequest("Embeddings are not streamed: 'stream' must be false or absent", param="stream")
    return model


def validate_responses(body: JSON, limits: RequestLimits) -> str:
    model = require_model(body)
    expect(body, "stream", bool)
    if isinstance(expect(body, "input", (str, list)), list):
        check_count(body["input"], "input", limits)
    check_output_tokens(expect(body, "max_output_tokens", int), "max_output_tokens", model, limits)
    return model


def read_chat_response(resp: JSON, summary: ResponseSummary) -> None:
    summary.usage = usage_from_openai(resp.get("usage"))
    summary.response_id = resp.get("id")
    summary.response_model = resp.get("model")
    summary.system_fingerprint = resp.get("system_fingerprint")
    choices = resp.get("choices") or []
    if choices:
        first = choices[0]
        summary.finish_reason = first.get("finish_reason")
        content = (first.get("message") or {}).get("content")
        if isinstance(content, str):
            summary.text_parts.append(content)
    summary.complete = True


class ChatStreamReader:
    """Follows OpenAI chunks: fills the summary and rebuilds the complete answer
    (for the cache) without holding more than the answer itself."""

    def __init__(self, summary: ResponseSummary):
        self.summary = summary
        self._choices: dict[int, dict[str, Any]] = {}
        self._first: JSON | None = None

    def feed(self, chunk: JSON) -> None:
        s = self.summary
        if self._first is None:
            self._first = chunk
            s.response_id = chunk.get("id")
            s.response_model = chunk.get("model")
        if chunk.get("system_fingerprint"):
            s.system_fingerprint = chunk["system_fingerprint"]
        if chunk.get("usage"):
            s.usage = usage_from_openai(chunk["usage"])
        for choice in chunk.get("choices") or ():
            idx = choice.get("index", 0)
            acc = self._choices.get(idx)
            if acc is None:
                acc = self._choices[idx] = {"content": [], "tool_calls": {}, "finish_reason": None}
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content:
                acc["content"].append(content)
                if idx == 0:
                    s.text_parts.append(content)
            for tc in delta.get("tool_calls") or ():
                slot = acc["tool_calls"].setdefault(tc.get("index", 0), {"id": None, "name": "", "arguments": []})
                if tc.get("id"):
                    slot["id"] = tc["id"]
                fn = tc.get("function") or {}
                if fn.get("name"):
                    slot["name"] = fn["name"]
                if fn.get("arguments"):
                    slot["arguments"].append(fn["arguments"])
            if choice.get("finish_reason"):
                acc["finish_reason"] = choice["finish_reason"]
                if idx == 0:
                    s.finish_reason = choice["finish_reason"]

    def assembled(self) -> JSON:
        """The stream as one `chat.completion` object."""
        first = self._first or {}
        choices = []
        for idx in sorted(self._choices):
            acc = self._choices[idx]
            message: JSON = {"role": "assistant", "content": "".join(acc["content"]) or None}
            if acc["tool_calls"]:
                message["tool_calls"] = [
                    {"id": tc["id"], "type": "function",
                     "function": {"name": tc["name"], "arguments": "".join(tc["arguments"])}}
                    for _, tc in sorted(acc["tool_calls"].items())
                ]
            choices.append({"index": idx, "message": message, "finish_reason": acc["finish_reason"],
                            "logprobs": None})
        u = self.summary.usage
        return {
            "id": first.get("id"), "object": "chat.completion", "created": first.get("created"),
            "model": first.get("model"), "system_fingerprint": self.summary.system_fingerprint,
            "choices": choices,
            "usage": {"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens,
                      "total_tokens": u.input_tokens + u.output_tokens},
        }


def stream_error_event(err: GatewayError) -> bytes:
    # The openai SDK raises APIError when a data event carries an `error` object.
    return openai_event({"error": {"message": err.message, "type": err.type, "code": err.code}})


def prompt_text(body: JSON) -> str:
    """The prompt as plain text, for traces (after guardrails)."""
    parts: list[str] = []
    for m in body.get("messages") or ():
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, str):
            parts.append(f"{m.get('role')}: {content}")
        elif isinstance(content, list):
            texts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
            parts.append(f"{m.get('role')}: {' '.join(texts)}")
    return "\n".join(parts)
