"""OpenAI Responses API of the mock: POST /v1/responses, plain and streamed.

The output is one item: a message (text, or JSON for `text.format` json_schema), or a
function_call; input ending with function_call_output items is answered with text.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from gateway.mock.content import (
    count_words,
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
    json_reply,
    named_event,
    new_id,
    openai_error,
    stream_reply,
)


def responses(body: dict[str, Any], model: str, options: MockOptions) -> Reply:
    """A `response` object whose output is one message (or one function_call)."""
    given = body.get("input")
    if isinstance(given, str):
        items: list[Any] = [{"role": "user", "content": given}]
    elif isinstance(given, list) and given:
        items = given
    else:
        return openai_error(400, "Missing required parameter: 'input'.", param="input",
                            code="missing_required_parameter")
    input_tokens = prompt_tokens(items) + count_words(body.get("instructions"))
    results = _tool_results(items)
    tool = _chosen_tool(body, items, after_tool=results is not None)
    status, incomplete = "completed", None
    if tool is not None:
        arguments = orjson.dumps(example_from_schema(tool.get("parameters"))).decode()
        fragments = fixed_fragments(arguments)
        item: dict[str, Any] = {"type": "function_call", "id": new_id("fc_"), "call_id": new_id("call_"),
                                "name": tool.get("name"), "arguments": arguments, "status": "completed"}
    else:
        if results is not None:
            words = tool_answer_words(body, results, options.output_tokens)
        else:
            words = reply_words(body, last_user_text(items), options.output_tokens)
        fragments = _text_fragments(body, words)
        fragments, truncated = limit_fragments(fragments, body.get("max_output_tokens"))
        if truncated:
            status, incomplete = "incomplete", {"reason": "max_output_tokens"}
        item = {"type": "message", "id": new_id("msg_"), "status": status, "role": "assistant",
                "content": [{"type": "output_text", "text": "".join(fragments), "annotations": [],
                             "logprobs": []}]}
    output_tokens = len(fragments)
    response = {
        "id": new_id("resp_"), "object": "response", "created_at": int(time.time()), "status": status,
        "background": False, "error": None, "incomplete_details": incomplete,
        "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
        "metadata": body.get("metadata") or {}, "model": model, "output": [item], "parallel_tool_calls": True,
        "previous_response_id": body.get("previous_response_id"), "reasoning": {"effort": None, "summary": None},
        "service_tier": "default", "store": body.get("store", True), "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}}, "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [], "top_p": body.get("top_p", 1.0), "truncation": "disabled",
        "usage": {"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 0},
                  "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                  "total_tokens": input_tokens + output_tokens},
        "user": None,
    }
    if body.get("stream") is True:
        return stream_reply(_events(response, fragments))
    return json_reply(response)


def _text_fragments(body: dict[str, Any], words: list[str]) -> list[str]:
    """Plain text, or JSON when `text.format` asks for json_schema (structured outputs) or json_object."""
    text = body.get("text")
    spec = text.get("format") if isinstance(text, dict) else None
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind == "json_schema":
        schema = spec.get("schema")
        return structured_fragments(schema if isinstance(schema, dict) else {"type": "object"})
    if kind == "json_object":
        return structured_fragments(None, words)
    return word_fragments(words)


def _tool_results(items: list[Any]) -> list[str] | None:
    """The outputs of the function_call_output items that end the input; None if it does not end so."""
    results: list[str] = []
    for item in reversed(items):
        if not isinstance(item, dict) or item.get("type") != "function_call_output":
            break
        results.append(joined_text(item.get("output")))
    return results[::-1] if results else None


def _chosen_tool(body: dict[str, Any], items: list[Any], after_tool: bool) -> dict[str, Any] | None:
    """The function the mock calls: the one tool_choice names; else, unless function outputs
    were just given (then it answers) or tool_choice is "required", the next uncalled one."""
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if not isinstance(tools, list) or choice == "none":
        return None
    functions = [t for t in tools if isinstance(t, dict) and t.get("type") == "function"]
    if not functions:
        return None
    if isinstance(choice, dict) and choice.get("name"):
        return next((f for f in functions if f.get("name") == choice["name"]), functions[0])
    if after_tool and choice != "required":
        return None
    called = {item.get("name") for item in items if isinstance(item, dict) and item.get("type") == "function_call"}
    return next_tool(functions, [f.get("name") for f in functions], called)


def _events(response: dict[str, Any], fragments: list[str]) -> list[bytes]:
    """The semantic events of a streamed response, numbered like OpenAI's."""
    item = response["output"][0]
    item_id = item["id"]
    running = {**response, "status": "in_progress", "output": [], "usage": None, "incomplete_details": None}
    payloads: list[dict[str, Any]] = [
        {"type": "response.created", "response": running},
        {"type": "response.in_progress", "response": running},
    ]
    if item["type"] == "message":
        part = item["content"][0]
        payloads.append({"type": "response.output_item.added", "output_index": 0,
                         "item": {**item, "status": "in_progress", "content": []}})
        where = {"item_id": item_id, "output_index": 0, "content_index": 0}
        payloads.append({"type": "response.content_part.added", **where, "part": {**part, "text": ""}})
        payloads.extend({"type": "response.output_text.delta", **where, "delta": f, "logprobs": []}
                        for f in fragments)
        payloads.append({"type": "response.output_text.done", **where, "text": part["text"], "logprobs": []})
        payloads.append({"type": "response.content_part.done", **where, "part": part})
    else:
        payloads.append({"type": "response.output_item.added", "output_index": 0,
                         "item": {**item, "status": "in_progress", "arguments": ""}})
        where = {"item_id": item_id, "output_index": 0}
        payloads.extend({"type": "response.function_call_arguments.delta", **where, "delta": f} for f in fragments)
        payloads.append({"type": "response.function_call_arguments.done", **where, "arguments": item["arguments"]})
    payloads.append({"type": "response.output_item.done", "output_index": 0, "item": item})
    final = "response.completed" if response["status"] == "completed" else "response.incomplete"
    payloads.append({"type": final, "response": response})
    return [named_event(p["type"], {**p, "sequence_number": n}) for n, p in enumerate(payloads)]

