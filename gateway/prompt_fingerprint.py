"""What identifies an application's prompt: its system prompt and tool schemas, hashed.

`llm_requests.prompt_fingerprint` lets the drift monitor tell a team's own prompt change
(a new fingerprint: an event) from drift of the traffic behind one prompt (issue 23). So
the hash covers what a team edits when it ships a new version (system / developer
instructions, the tools it declares) and nothing a user types (the user and assistant
turns, sampling parameters, the model).

Both wire formats reduce to one canonical form first, so an OpenAI caller and an Anthropic
caller with the same system text and the same tools get the same fingerprint:
- system: the text pieces in order. OpenAI: every `system` / `developer` message (string
  content or its text parts); Anthropic: `system` (a string or its text blocks); Responses:
  `instructions`. Pieces are not joined, so ["a", "b"] as two system messages and as two
  Anthropic text blocks are the same; ["a\\n\\nb"] as one block is not.
- tools: a function tool is (name, description, JSON schema) whatever its wrapping
  (OpenAI `{"type": "function", "function": {...}}`, Responses' flat form, Anthropic's
  `input_schema`); `strict` and `cache_control` are left out (decoding and billing hints,
  not prompt). Any other tool (Anthropic server tools, Responses built-ins) counts as its
  whole object minus `cache_control`. Tool order counts: models see tools in order.
No system text and no tools: "" (the fingerprint of "no application prompt").

Cheap on purpose (the request row is built on the event loop): one orjson dump and one
SHA-1 of it (not for security: the fastest hash here, hardware-assisted), a few
microseconds for a few KB of prompt; nothing is sorted but the JSON schemas' keys.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from gateway.types import JSON, Operation, WireFormat

_SYSTEM_ROLES = frozenset({"system", "developer"})
_RESPONSE_FORMATS = frozenset({"json_object", "json_schema"})


def _texts(content: Any) -> list[str]:
    """Text pieces of a message content or Anthropic `system`: a string, or text blocks."""
    if isinstance(content, str):
        return [content] if content else []
    if isinstance(content, list):
        return [p["text"] for p in content
                if isinstance(p, dict) and p.get("type") in ("text", "input_text") and isinstance(p.get("text"), str)]
    return []


def _system(body: JSON, api_format: WireFormat, operation: Operation) -> list[str]:
    if api_format is WireFormat.ANTHROPIC:
        return _texts(body.get("system"))
    if operation is Operation.RESPONSES:
        pieces = _texts(body.get("instructions"))
        items = body.get("input")
        messages = items if isinstance(items, list) else ()
    else:
        pieces = []
        messages = body.get("messages") or ()
    for m in messages:
        if isinstance(m, dict) and m.get("role") in _SYSTEM_ROLES:
            pieces += _texts(m.get("content"))
    return pieces


def _tool(tool: Any) -> Any:
    """A tool in the form shared by every wire format."""
    if not isinstance(tool, dict):
        return tool
    kind = tool.get("type")
    if kind == "function":
        fn = tool.get("function") if isinstance(tool.get("function"), dict) else tool   # chat | responses
        return ("function", fn.get("name"), fn.get("description") or "", fn.get("parameters") or {})
    if "input_schema" in tool and kind in (None, "custom"):                             # anthropic
        return ("function", tool.get("name"), tool.get("description") or "", tool.get("input_schema") or {})
    return {k: v for k, v in tool.items() if k != "cache_control"}


def _tools(body: JSON) -> list[Any]:
    tools = body.get("tools")
    out = [_tool(t) for t in tools] if isinstance(tools, list) else []
    functions = body.get("functions")                        # OpenAI's legacy form
    if isinstance(functions, list):
        out += [("function", f.get("name"), f.get("description") or "", f.get("parameters") or {})
                for f in functions if isinstance(f, dict)]
    return out


def prompt_fingerprint(body: JSON | None, api_format: WireFormat, operation: Operation) -> str:
    """16 hex chars identifying the request's system prompt + tool schemas; "" without either."""
    if not body or operation is Operation.EMBEDDINGS:
        return ""
    system = _system(body, api_format, operation)
    tools = _tools(body)
    if not system and not tools:
        return ""
    try:
        canonical = orjson.dumps((system, tools), option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    except (TypeError, orjson.JSONEncodeError):              # a value JSON cannot hold: hash its repr
        canonical = repr((system, tools)).encode("utf-8", "backslashreplace")
    return hashlib.sha1(canonical, usedforsecurity=False).hexdigest()[:16]


def response_format(body: JSON | None, api_format: WireFormat, operation: Operation) -> str:
    """"json_object" | "json_schema" when the caller asked for JSON, else "". Anthropic's
    structured outputs (`output_config.format`, earlier `output_format`) are json_schema;
    Responses' `text.format` counts like Chat's `response_format`."""
    if not body:
        return ""
    if api_format is WireFormat.ANTHROPIC:
        config = body.get("output_config")
        spec = (config.get("format") if isinstance(config, dict) else None) or body.get("output_format")
        return "json_schema" if isinstance(spec, dict) and spec else ""
    if operation is Operation.RESPONSES:
        text = body.get("text")
        spec = text.get("format") if isinstance(text, dict) else None
    else:
        spec = body.get("response_format")
    kind = spec.get("type") if isinstance(spec, dict) else None
    return kind if kind in _RESPONSE_FORMATS else ""
