"""Anthropic Messages wire format of the mock: POST /v1/messages, plain and streamed."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.mock.content import (
    example_from_schema,
    fixed_fragments,
    last_user_text,
    limit_fragments,
    prompt_tokens,
    reply_words,
    word_fragments,
)
from gateway.mock.options import MockOptions
from gateway.mock.replies import (
    Reply,
    anthropic_error,
    json_reply,
    named_event,
    new_id,
    stream_reply,
)

PING_EVENT = named_event("ping", {"type": "ping"})
STOP_EVENT = named_event("message_stop", {"type": "message_stop"})


def messages(body: dict[str, Any], model: str, options: MockOptions) -> Reply:
    """A `message` object, or the event stream Anthropic sends for `stream: true`."""
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        return anthropic_error(400, "max_tokens: Field required")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        return anthropic_error(400, "max_tokens: Input should be a valid integer greater than or equal to 1")
    turns = body.get("messages")
    if not isinstance(turns, list) or not turns:
        return anthropic_error(400, "messages: Field required")
    input_tokens = prompt_tokens(turns, body.get("system"))
    tool = _chosen_tool(body)
    if tool is not None:
        arguments = example_from_schema(tool.get("input_schema"))
        fragments = fixed_fragments(orjson.dumps(arguments).decode())
        block: dict[str, Any] = {"type": "tool_use", "id": new_id("toolu_"), "name": tool.get("name"),
                                 "input": arguments}
        stop_reason = "tool_use"
    else:
        words = reply_words(body, last_user_text(turns), options.output_tokens)
        fragments, truncated = limit_fragments(word_fragments(words), max_tokens)
        block = {"type": "text", "text": "".join(fragments)}
        stop_reason = "max_tokens" if truncated else "end_turn"
    message = {"id": new_id("msg_"), "type": "message", "role": "assistant", "model": model,
               "content": [block], "stop_reason": stop_reason, "stop_sequence": None,
               "usage": _usage(input_tokens, len(fragments))}
    if body.get("stream") is True:
        return stream_reply(_events(message, fragments))
    return json_reply(message)


def _usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    return {"input_tokens": input_tokens, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
            "output_tokens": output_tokens}


def _chosen_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    """The tool the mock uses: the one named by tool_choice {"type": "tool"}, else the first."""
    tools = body.get("tools")
    choice = body.get("tool_choice")
    choice_type = choice.get("type") if isinstance(choice, dict) else None
    if not isinstance(tools, list) or choice_type == "none":
        return None
    custom = [t for t in tools if isinstance(t, dict) and isinstance(t.get("input_schema"), dict)]
    if not custom:
        return None
    if choice_type == "tool":
        return next((t for t in custom if t.get("name") == choice.get("name")), custom[0])
    return custom[0]


def _events(message: dict[str, Any], fragments: list[str]) -> list[bytes]:
    """message_start, one content block with its deltas, message_delta, message_stop."""
    block = message["content"][0]
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None,
             "usage": {**usage, "output_tokens": 1}}
    if block["type"] == "text":
        empty_block: dict[str, Any] = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": f} for f in fragments]
    else:
        empty_block = {**block, "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": f} for f in fragments]
    events = [
        named_event("message_start", {"type": "message_start", "message": start}),
        named_event("content_block_start", {"type": "content_block_start", "index": 0, "content_block": empty_block}),
        PING_EVENT,
    ]
    events.extend(named_event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": d})
                  for d in deltas)
    events.append(named_event("content_block_stop", {"type": "content_block_stop", "index": 0}))
    events.append(named_event("message_delta", {
        "type": "message_delta",
        "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
        "usage": {"output_tokens": usage["output_tokens"]},
    }))
    events.append(STOP_EVENT)
    return events
