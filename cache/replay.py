"""Replay a cached complete response as a well-formed SSE stream in the caller's format.

A streaming request can be answered from an entry stored from a non-streaming one (and
vice versa): the stored form is always the complete response, and these functions rebuild
the event sequence the provider would have sent. Each text is sent as one delta: the
answer is already complete, so splitting it would only add bytes.
"""

from __future__ import annotations

from typing import Any

import orjson


def _data(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _event(name: str, obj: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\n" + _data(obj)


def openai_chat_as_sse(resp: dict[str, Any], include_usage: bool) -> list[bytes]:
    """chat.completion -> chat.completion.chunk lines, then `data: [DONE]`."""
    base: dict[str, Any] = {
        "id": resp.get("id", ""),
        "object": "chat.completion.chunk",
        "created": resp.get("created", 0),
        "model": resp.get("model", ""),
    }
    for optional in ("system_fingerprint", "service_tier"):
        if resp.get(optional) is not None:
            base[optional] = resp[optional]
    if include_usage:
        base["usage"] = None  # as OpenAI sends it: null on every chunk but the last

    def chunk(index: int, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return _data({**base, "choices": [choice]})

    lines: list[bytes] = []
    for position, choice in enumerate(resp.get("choices", [])):
        index = choice.get("index", position)
        message = choice.get("message") or {}
        lines.append(chunk(index, {"role": message.get("role", "assistant"), "content": ""}))
        if message.get("content"):
            lines.append(chunk(index, {"content": message["content"]}))
        if message.get("refusal"):
            lines.append(chunk(index, {"refusal": message["refusal"]}))
        for call_index, call in enumerate(message.get("tool_calls") or []):
            function = call.get("function") or {}
            delta_call = {
                "index": call_index,
                "id": call.get("id"),
                "type": call.get("type", "function"),
                "function": {"name": function.get("name"), "arguments": function.get("arguments", "")},
            }
            lines.append(chunk(index, {"tool_calls": [delta_call]}))
        lines.append(chunk(index, {}, choice.get("finish_reason") or "stop"))
    if include_usage:
        lines.append(_data({**base, "choices": [], "usage": resp.get("usage")}))
    lines.append(b"data: [DONE]\n\n")
    return lines


def _block_events(index: int, block: dict[str, Any]) -> list[bytes]:
    kind = block.get("type")
    if kind == "text":
        start = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": block.get("text", "")}]
    elif kind in ("tool_use", "server_tool_use"):
        start = {**block, "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": orjson.dumps(block.get("input", {})).decode()}]
    elif kind == "thinking":
        start = {"type": "thinking", "thinking": "", "signature": ""}
        deltas = [{"type": "thinking_delta", "thinking": block.get("thinking", "")}]
        if block.get("signature"):
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
    else:  # redacted_thinking, tool results, ...: sent whole in the start event
        start, deltas = block, []
    events = [_event("content_block_start", {"type": "content_block_start", "index": index, "content_block": start})]
    events += [
        _event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}) for d in deltas
    ]
    events.append(_event("content_block_stop", {"type": "content_block_stop", "index": index}))
    return events


def anthropic_message_as_sse(resp: dict[str, Any]) -> list[bytes]:
    """message -> message_start, content_block_* per block, message_delta, message_stop."""
    usage = dict(resp.get("usage") or {})
    output_tokens = usage.get("output_tokens", 0)
    start_message = {
        "id": resp.get("id", ""),
        "type": "message",
        "role": resp.get("role", "assistant"),
        "model": resp.get("model", ""),
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**usage, "output_tokens": min(output_tokens, 1)},
    }
    lines = [_event("message_start", {"type": "message_start", "message": start_message})]
    for index, block in enumerate(resp.get("content", [])):
        lines += _block_events(index, block)
    lines.append(
        _event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": resp.get("stop_reason"), "stop_sequence": resp.get("stop_sequence")},
                "usage": {"output_tokens": output_tokens},
            },
        )
    )
    lines.append(_event("message_stop", {"type": "message_stop"}))
    return lines
