"""OpenAI Chat Completions shapes -> Anthropic Messages shapes.

Two uses, one direction of the vocabulary:
- `openai_request_to_anthropic`: an OpenAI caller's request, sent to an Anthropic deployment.
- `openai_response_to_anthropic`: an OpenAI-type provider's answer, returned to an Anthropic caller.

Request translation, what happens to each OpenAI field:
- `system` / `developer` messages, wherever they sit, are hoisted into Anthropic's top-level
  `system` (a string when there is one plain block, else a list of text blocks); Anthropic
  has no mid-conversation system turn.
- consecutive same-role turns are merged (Anthropic requires alternation); `role: tool`
  messages become `tool_result` blocks in a user turn, and a merged user turn lists its
  tool results first, as Anthropic requires.
- `max_completion_tokens` (else `max_tokens`, else `default_max_tokens`) -> `max_tokens`,
  which Anthropic requires. `temperature` is clamped to Anthropic's 0..1 range.
- `stop` -> `stop_sequences`, `user` / `safety_identifier` -> `metadata.user_id`,
  `parallel_tool_calls: false` -> `tool_choice.disable_parallel_tool_use`; `top_k`, an
  Anthropic field some OpenAI clients send as an extra, passes through.
- `response_format` json_schema -> Anthropic's native structured outputs,
  `output_config.format` (the schema rewritten to the subset Anthropic constrains to,
  `json_schema.anthropic_output_schema`). json_object ("any JSON object") has no native
  form: an instruction is appended to `system`, best effort, as Anthropic documents.
- dropped, no Anthropic counterpart: frequency_penalty, presence_penalty, logit_bias,
  logprobs, top_logprobs, seed, service_tier, store, metadata, modalities, audio,
  prediction, reasoning_effort, verbosity, web_search_options, prompt_cache_key,
  stream_options (the gateway reads include_usage itself), message `name` fields and
  `image_url.detail`.
- rejected with TranslationError: `n` > 1, deprecated `functions` / `function_call`,
  non-function tools, audio input, file ids, images that are neither base64 data URLs of
  jpeg/png/gif/webp nor http(s) URLs.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import orjson

from gateway.translate.errors import TranslationError, shape_error
from gateway.translate.json_schema import anthropic_output_schema
from gateway.translate.media import openai_file_to_anthropic, openai_image_to_anthropic
from gateway.translate.usage import openai_usage_to_anthropic, stop_reason_from_openai

DEFAULT_MAX_TOKENS = 4096

# Anthropic tool ids must match ^[a-zA-Z0-9_-]+$; OpenAI ids are free-form.
_TOOL_ID_FORBIDDEN = re.compile(r"[^a-zA-Z0-9_-]")

_JSON_OBJECT_INSTRUCTION = (
    "Respond with a single valid JSON object and nothing else: no prose, no Markdown code fences."
)
_JSON_OBJECT = object()     # response_format json_object: no native form, an instruction


def openai_request_to_anthropic(
    body: dict, upstream_model: str, *, default_max_tokens: int = DEFAULT_MAX_TOKENS
) -> dict:
    """An OpenAI chat completion request as an Anthropic Messages request for `upstream_model`."""
    if not isinstance(body, dict):
        raise TranslationError("request body must be a JSON object")
    try:
        return _request(body, upstream_model, default_max_tokens)
    except TranslationError:
        raise
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        # A structurally malformed request is the caller's error, not a gateway crash.
        raise TranslationError(f"malformed chat completion request: {shape_error(exc)}") from exc


def _request(body: dict, upstream_model: str, default_max_tokens: int) -> dict:
    if body.get("n") not in (None, 1):
        raise TranslationError("'n' > 1 is not supported by Anthropic models")
    for legacy in ("functions", "function_call"):
        if body.get(legacy) is not None:
            raise TranslationError(f"'{legacy}' is deprecated and not translated; use 'tools'")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise TranslationError("'messages' must be a non-empty array")

    system, turns = _convert_messages(messages)
    output_format = _output_format(body.get("response_format"))
    if output_format is _JSON_OBJECT:
        system.append({"type": "text", "text": _JSON_OBJECT_INSTRUCTION})

    out: dict[str, Any] = {
        "model": upstream_model,
        "max_tokens": _max_tokens(body, default_max_tokens),
        "messages": turns,
    }
    if system:
        plain = len(system) == 1 and "cache_control" not in system[0]
        out["system"] = system[0]["text"] if plain else system
    if isinstance(output_format, dict):
        out["output_config"] = {"format": output_format}
    if body.get("temperature") is not None:
        out["temperature"] = min(float(body["temperature"]), 1.0)
    for key in ("top_p", "top_k"):
        if body.get(key) is not None:
            out[key] = body[key]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("stream"):
        out["stream"] = True
    user = body.get("user") or body.get("safety_identifier")
    if user:
        out["metadata"] = {"user_id": str(user)}
    tools = body.get("tools")
    if tools:
        out["tools"] = [_tool(tool) for tool in tools]
        choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if choice is not None:
            out["tool_choice"] = choice
    return out


def _max_tokens(body: dict, default: int) -> int:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is not None:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise TranslationError(f"'{key}' must be a positive integer")
            return value
    return default


def _convert_messages(messages: list) -> tuple[list[dict], list[dict]]:
    """OpenAI messages -> (Anthropic system blocks, alternating Anthropic turns)."""
    system: list[dict] = []
    turns: list[dict] = []
    for position, message in enumerate(messages):
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_text_blocks(message.get("content"), f"messages[{position}]"))
            continue
        if role == "user":
            blocks = _user_blocks(message.get("content"), f"messages[{position}]")
        elif role == "assistant":
            role, blocks = "assistant", _assistant_blocks(message, f"messages[{position}]")
        elif role == "tool":
            role, blocks = "user", [_tool_result(message)]
        elif role == "function":
            raise TranslationError("'function' messages are deprecated and not translated; use tools")
        else:
            raise TranslationError(f"messages[{position}].role {role!r} is not supported")
        if not blocks:
            continue  # Anthropic rejects empty turns; an empty OpenAI turn carries nothing.
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        turn["content"] = _finish_turn(turn["content"])
    return system, turns


def _finish_turn(blocks: list[dict]) -> list[dict] | str:
    """Tool results first (Anthropic's rule); a lone plain text block becomes a string."""
    if any(block["type"] == "tool_result" for block in blocks):
        blocks.sort(key=lambda block: block["type"] != "tool_result")  # stable partition
    if len(blocks) == 1 and blocks[0]["type"] == "text" and len(blocks[0]) == 2:
        return blocks[0]["text"]
    return blocks


def _text_block(part: dict) -> dict | None:
    text = part.get("text")
    if not isinstance(text, str):
        raise TranslationError("a text part must carry a string 'text'")
    if not text:
        return None  # Anthropic rejects empty text blocks.
    block = {"type": "text", "text": text}
    if part.get("cache_control"):
        block["cache_control"] = part["cache_control"]
    return block


def _text_blocks(content: Any, where: str) -> list[dict]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for part in content:
        if part.get("type") not in ("text", "refusal"):
            raise TranslationError(f"{where}: only text content is allowed here")
        if part["type"] == "refusal":
            part = {"text": part.get("refusal")}
        block = _text_block(part)
        if block:
            blocks.append(block)
    return blocks


def _user_blocks(content: Any, where: str) -> list[dict]:
    if content is None or isinstance(content, str):
        return _text_blocks(content, where)
    blocks = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            block = _text_block(part)
        elif kind == "image_url":
            block = openai_image_to_anthropic(part["image_url"], where)
        elif kind == "file":
            block = openai_file_to_anthropic(part["file"], where)
        else:
            raise TranslationError(f"{where}: content part type {kind!r} has no Anthropic form")
        if block:
            blocks.append(block)
    return blocks


def _tool_id(raw: Any) -> str:
    if not isinstance(raw, str) or not raw:
        raise TranslationError("tool call ids must be non-empty strings")
    return _TOOL_ID_FORBIDDEN.sub("_", raw)


def _assistant_blocks(message: dict, where: str) -> list[dict]:
    if message.get("function_call") is not None:
        raise TranslationError(f"{where}: 'function_call' is deprecated and not translated; use tool_calls")
    blocks = _text_blocks(message.get("content"), where)
    if message.get("refusal"):
        blocks.append({"type": "text", "text": message["refusal"]})
    for call in message.get("tool_calls") or []:
        if call.get("type", "function") != "function":
            raise TranslationError(f"{where}: tool call type {call.get('type')!r} has no Anthropic form")
        function = call["function"]
        blocks.append(
            {
                "type": "tool_use",
                "id": _tool_id(call.get("id")),
                "name": function["name"],
                "input": _arguments_object(function.get("arguments"), where),
            }
        )
    return blocks


def _parsed_arguments(arguments: Any) -> dict | None:
    """Tool-call arguments (a JSON string, or already an object) as an object; None when
    they are not a JSON object. Callers decide what invalid arguments mean."""
    if isinstance(arguments, dict):
        return arguments
    if not arguments:
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _arguments_object(arguments: Any, where: str) -> dict:
    """A caller's arguments: invalid ones are the caller's error."""
    value = _parsed_arguments(arguments)
    if value is None:
        raise TranslationError(f"{where}: tool call arguments are not valid JSON for a JSON object")
    return value


def _tool_result(message: dict) -> dict:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": _tool_id(message.get("tool_call_id"))}
    content = message.get("content")
    if isinstance(content, str):
        if content:
            block["content"] = content
    elif content:
        block["content"] = _text_blocks(content, "tool message")
    return block


def _output_format(response_format: Any) -> dict | object | None:
    """`output_config.format` for a json_schema response_format; `_JSON_OBJECT` for json_object."""
    if not response_format:
        return None
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return _JSON_OBJECT
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            raise TranslationError("response_format json_schema needs a 'json_schema.schema' object")
        return {"type": "json_schema", "schema": anthropic_output_schema(spec["schema"])}
    raise TranslationError(f"response_format type {kind!r} is not supported")


def _tool(tool: dict) -> dict:
    if tool.get("type", "function") != "function":
        raise TranslationError(f"tool type {tool.get('type')!r} has no Anthropic form")
    function = tool["function"]
    out: dict[str, Any] = {
        "name": function["name"],
        "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
    }
    if function.get("description"):
        out["description"] = function["description"]
    return out


def _tool_choice(choice: Any, parallel_tool_calls: Any) -> dict | None:
    if choice is None:
        out = {"type": "auto"} if parallel_tool_calls is False else None
    elif choice == "auto":
        out = {"type": "auto"}
    elif choice == "none":
        return {"type": "none"}  # Anthropic's `none` takes no parallelism flag.
    elif choice == "required":
        out = {"type": "any"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        out = {"type": "tool", "name": choice["function"]["name"]}
    else:
        raise TranslationError(f"tool_choice {choice!r} has no Anthropic form")
    if out is not None and parallel_tool_calls is False:
        out["disable_parallel_tool_use"] = True
    return out


def openai_response_to_anthropic(resp: dict, model: str) -> dict:
    """An OpenAI chat completion (first choice) as an Anthropic Message; `model` names it when
    the completion does not."""
    choices = resp.get("choices") or [{}]
    choice = choices[0]
    message = choice.get("message") or {}
    content: list[dict] = []
    text = message.get("content")
    if isinstance(text, list):  # some OpenAI-compatible servers answer with parts
        text = "".join(part.get("text") or "" for part in text)
    if text:
        content.append({"type": "text", "text": text})
    refusal = message.get("refusal")
    if refusal:
        content.append({"type": "text", "text": refusal})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or f"toolu_{uuid.uuid4().hex[:24]}",
                "name": function.get("name", ""),
                "input": _upstream_arguments(function.get("arguments")),
            }
        )
    if refusal and not text:
        stop_reason = "refusal"
    elif message.get("tool_calls"):
        # Some OpenAI-compatible servers say "stop" after tool calls; agent loops key on tool_use.
        stop_reason = "tool_use"
    else:
        stop_reason = stop_reason_from_openai(choice.get("finish_reason"))
    return {
        "id": f"msg_{resp.get('id') or uuid.uuid4().hex}",
        "type": "message",
        "role": "assistant",
        "model": resp.get("model") or model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": openai_usage_to_anthropic(resp.get("usage") or {}),
    }


def _upstream_arguments(arguments: Any) -> dict:
    """The provider's argument string as an object; invalid JSON is kept, not lost, under `_raw_arguments`."""
    value = _parsed_arguments(arguments)
    return value if value is not None else {"_raw_arguments": arguments}
