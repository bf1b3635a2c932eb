"""Anthropic Messages shapes -> OpenAI Chat Completions shapes.

Two uses, one direction of the vocabulary:
- `anthropic_request_to_openai`: an Anthropic caller's request, sent to an OpenAI-type deployment.
- `anthropic_response_to_openai`: an Anthropic provider's answer, returned to an OpenAI caller.

Request translation, what happens to each Anthropic field:
- top-level `system` (string or text blocks, joined by a blank line) -> one leading
  `system` message.
- `tool_result` blocks -> `role: tool` messages placed before the rest of their user turn
  (OpenAI wants tool answers right after the assistant's tool calls); their text parts are
  joined; `is_error` has no OpenAI form and is dropped (the text usually says it).
- `tool_use` blocks -> assistant `tool_calls` (input object -> arguments JSON string).
- images (base64 / url) -> `image_url` parts; base64 PDF documents -> `file` parts; plain
  text documents -> text parts.
- `max_tokens` -> `max_tokens` (or `max_completion_tokens`, per deployment: OpenAI's
  reasoning models accept only that one), `stop_sequences` -> `stop`,
  `metadata.user_id` -> `user`, `disable_parallel_tool_use` -> `parallel_tool_calls: false`,
  `output_config.format` (structured outputs) -> `response_format` json_schema.
- `stream: true` also sets `stream_options.include_usage`, so the stream ends with usage.
- dropped, no OpenAI counterpart: top_k, thinking (and thinking blocks in history),
  cache_control, service_tier, inference_geo, speed, container, output_config.effort.
- rejected with TranslationError: server tools (web search, bash, computer use, ...),
  file-id sources, URL PDFs, images inside tool results.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import orjson

from gateway.translate.errors import TranslationError, shape_error
from gateway.translate.json_schema import openai_strict_compatible
from gateway.translate.media import (
    anthropic_document_to_openai,
    anthropic_image_to_openai,
)
from gateway.translate.usage import (
    anthropic_usage_to_openai,
    finish_reason_from_anthropic,
)

MaxTokensField = Literal["max_tokens", "max_completion_tokens"]


def anthropic_request_to_openai(
    body: dict, upstream_model: str, *, max_tokens_field: MaxTokensField = "max_tokens"
) -> dict:
    """An Anthropic Messages request as an OpenAI chat completion request for `upstream_model`."""
    if not isinstance(body, dict):
        raise TranslationError("request body must be a JSON object")
    try:
        return _request(body, upstream_model, max_tokens_field)
    except TranslationError:
        raise
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        # A structurally malformed request is the caller's error, not a gateway crash.
        raise TranslationError(f"malformed messages request: {shape_error(exc)}") from exc


def _request(body: dict, upstream_model: str, max_tokens_field: str) -> dict:
    turns = body.get("messages")
    if not isinstance(turns, list) or not turns:
        raise TranslationError("'messages' must be a non-empty array")
    messages: list[dict] = []
    system = _system_text(body.get("system"))
    if system:
        messages.append({"role": "system", "content": system})
    for position, turn in enumerate(turns):
        where = f"messages[{position}]"
        role = turn.get("role")
        if role == "user":
            messages.extend(_user_messages(turn.get("content"), where))
        elif role == "assistant":
            messages.append(_assistant_message(turn.get("content"), where))
        else:
            raise TranslationError(f"{where}.role {role!r} is not supported")

    out: dict[str, Any] = {"model": upstream_model, "messages": messages}
    if body.get("max_tokens") is not None:
        out[max_tokens_field] = body["max_tokens"]
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("stop_sequences"):
        out["stop"] = list(body["stop_sequences"])
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    user_id = (body.get("metadata") or {}).get("user_id")
    if user_id:
        out["user"] = user_id
    tools = body.get("tools")
    if tools:
        out["tools"] = [_tool(tool) for tool in tools]
        choice = body.get("tool_choice")
        if choice:
            mapped = _tool_choice(choice)
            if mapped is not None:
                out["tool_choice"] = mapped
            if choice.get("disable_parallel_tool_use"):
                out["parallel_tool_calls"] = False
    response_format = _response_format(body)
    if response_format:
        out["response_format"] = response_format
    return out


def _system_text(system: Any) -> str:
    if system is None or isinstance(system, str):
        return system or ""
    texts = []
    for block in system:
        if block.get("type") != "text":
            raise TranslationError("system blocks must be text")
        texts.append(block["text"])
    return "\n\n".join(texts)


def _user_messages(content: Any, where: str) -> list[dict]:
    """One Anthropic user turn -> its tool answers first, then at most one user message."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    tool_messages: list[dict] = []
    parts: list[dict] = []
    for block in content:
        kind = block.get("type")
        if kind == "tool_result":
            tool_messages.append(
                {
                    "role": "tool",
                    "tool_call_id": block["tool_use_id"],
                    "content": _tool_result_text(block.get("content"), where),
                }
            )
        elif kind == "text":
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            parts.append(anthropic_image_to_openai(block["source"], where))
        elif kind == "document":
            parts.append(anthropic_document_to_openai(block, where))
        else:
            raise TranslationError(f"{where}: content block type {kind!r} has no OpenAI form")
    if not parts:
        return tool_messages
    if len(parts) == 1 and parts[0]["type"] == "text":
        return [*tool_messages, {"role": "user", "content": parts[0]["text"]}]
    return [*tool_messages, {"role": "user", "content": parts}]


def _tool_result_text(content: Any, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for block in content:
        if block.get("type") != "text":
            raise TranslationError(f"{where}: tool results may only carry text toward OpenAI")
        texts.append(block["text"])
    return "\n".join(texts)


def _tool_call(block: dict) -> dict:
    """An Anthropic `tool_use` block as an OpenAI tool call."""
    return {"id": block["id"], "type": "function",
            "function": {"name": block["name"], "arguments": _arguments(block.get("input"))}}


def _assistant_message(content: Any, where: str) -> dict:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[dict] = []
    for block in content:
        kind = block.get("type")
        if kind == "text":
            texts.append(block["text"])
        elif kind == "tool_use":
            calls.append(_tool_call(block))
        elif kind in ("thinking", "redacted_thinking"):
            continue  # reasoning traces are Anthropic-signed; an OpenAI model cannot use them
        else:
            raise TranslationError(f"{where}: content block type {kind!r} has no OpenAI form")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    elif message["content"] is None:
        message["content"] = ""
    return message


def _arguments(value: Any) -> str:
    return orjson.dumps(value if value is not None else {}).decode()


def _tool(tool: dict) -> dict:
    if tool.get("type") not in (None, "custom"):
        raise TranslationError(f"Anthropic server tool {tool.get('type')!r} has no OpenAI form")
    function: dict[str, Any] = {"name": tool["name"], "parameters": tool["input_schema"]}
    if tool.get("description"):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _tool_choice(choice: dict) -> Any:
    kind = choice.get("type")
    if kind == "auto":
        return "auto"
    if kind == "any":
        return "required"
    if kind == "none":
        return "none"
    if kind == "tool":
        return {"type": "function", "function": {"name": choice["name"]}}
    raise TranslationError(f"tool_choice type {kind!r} has no OpenAI form")


def _response_format(body: dict) -> dict | None:
    # `output_config.format` is current; top-level `output_format` is the earlier beta name.
    spec = (body.get("output_config") or {}).get("format") or body.get("output_format")
    if not spec:
        return None
    if spec.get("type") != "json_schema":
        raise TranslationError(f"output format type {spec.get('type')!r} is not supported")
    json_schema = {"name": "response", "schema": spec["schema"]}
    if openai_strict_compatible(spec["schema"]):
        json_schema["strict"] = True        # a constraint on OpenAI too, as it is on Anthropic
    return {"type": "json_schema", "json_schema": json_schema}


def anthropic_response_to_openai(resp: dict, model: str) -> dict:
    """An Anthropic Message as an OpenAI chat completion; `model` names it when the Message does not."""
    texts: list[str] = []
    calls: list[dict] = []
    for block in resp.get("content") or []:
        kind = block.get("type")
        if kind == "text":
            texts.append(block["text"])
        elif kind == "tool_use":
            calls.append(_tool_call(block))
        # thinking / server-tool blocks have no Chat Completions form and are dropped.
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    return {
        "id": f"chatcmpl-{resp.get('id', '')}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": resp.get("model") or model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": finish_reason_from_anthropic(resp.get("stop_reason")),
                "logprobs": None,
            }
        ],
        "usage": anthropic_usage_to_openai(resp.get("usage") or {}),
    }
