"""Anthropic Messages wire format of the mock: POST /v1/messages, plain and streamed."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.mock.content import (
    example_from_schema,
    fixed_fragments,
    joined_text,
    last_user_text,
    limit_fragments,
    next_tool,
    prompt_tokens,
    reply_words,
    structured_fragments,
    tool_answer_words,
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
    results = _tool_results(turns[-1])
    tool = _chosen_tool(body, turns, after_tool=results is not None)
    if tool is not None:
        arguments = example_from_schema(tool.get("input_schema"))
        fragments = fixed_fragments(orjson.dumps(arguments).decode())
        block: dict[str, Any] = {"type": "tool_use", "id": new_id("toolu_"), "name": tool.get("name"),
                                 "input": arguments}
        stop_reason = "tool_use"
    else:
        if results is not None:
            words = tool_answer_words(body, results, options.output_tokens)
        else:
            words = reply_words(body, last_user_text(turns), options.output_tokens)
        schema = _output_schema(body)
        fragments = word_fragments(words) if schema is None else structured_fragments(schema)
        fragments, truncated = limit_fragments(fragments, max_tokens)
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


def _tool_results(turn: Any) -> list[str] | None:
    """The texts of the tool_result blocks of the last turn; None when it carries none."""
    if not isinstance(turn, dict) or turn.get("role") != "user" or not isinstance(turn.get("content"), list):
        return None
    results = [joined_text(block.get("content")) for block in turn["content"]
               if isinstance(block, dict) and block.get("type") == "tool_result"]
    return results or None


def _called(turns: list[Any]) -> set[str]:
    """Names of the tools the assistant already used in this conversation."""
    return {block.get("name") for turn in turns if isinstance(turn, dict) and turn.get("role") == "assistant"
            and isinstance(turn.get("content"), list)
            for block in turn["content"] if isinstance(block, dict) and block.get("type") == "tool_use"}


def _chosen_tool(body: dict[str, Any], turns: list[Any], after_tool: bool) -> dict[str, Any] | None:
    """The tool the mock uses: the one named by tool_choice {"type": "tool"}; else, unless
    tool results were just given (then it answers) or tool_choice is "any", the next unused one."""
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
    if after_tool and choice_type != "any":
        return None
    return next_tool(custom, [t.get("name") for t in custom], _called(turns))


def _output_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """Native structured outputs: `output_config.format` (or the earlier top-level
    `output_format`) of type json_schema; the answer is then JSON valid against it."""
    config = body.get("output_config")
    spec = config.get("format") if isinstance(config, dict) else None
    spec = spec or body.get("output_format")
    if not isinstance(spec, dict) or spec.get("type") != "json_schema":
        return None
    schema = spec.get("schema")
    return schema if isinstance(schema, dict) else {"type": "object"}


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
    # The current API repeats the whole (cumulative) usage here, input tokens included;
    # clients such as LangChain read every count from this event alone.
    events.append(named_event("message_delta", {
        "type": "message_delta",
        "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
        "usage": usage,
    }))
    events.append(STOP_EVENT)
    return events
