"""Where the text of a request lives, in either wire format, so guardrails can read it
and write a rewritten version back (redacted or masked) without knowing the formats."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.types import JSON, WireFormat


@dataclass(slots=True)
class TextSlot:
    holder: Any        # the dict (or list) that holds the string
    key: Any           # its key (or index)
    role: str

    @property
    def text(self) -> str:
        return self.holder[self.key]

    def set(self, value: str) -> None:
        self.holder[self.key] = value


def _blocks(content: list, role: str, out: list[TextSlot]) -> None:
    for block in content:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind in ("text", "input_text") and isinstance(block.get("text"), str):
            out.append(TextSlot(block, "text", role))
        elif kind == "tool_result":                      # Anthropic tool results count as tool text
            inner = block.get("content")
            if isinstance(inner, str):
                out.append(TextSlot(block, "content", "tool"))
            elif isinstance(inner, list):
                _blocks(inner, "tool", out)


def text_slots(body: JSON, fmt: WireFormat) -> list[TextSlot]:
    """Every text part of a chat request: system prompt, messages, tool results."""
    out: list[TextSlot] = []
    if fmt is WireFormat.ANTHROPIC:
        system = body.get("system")
        if isinstance(system, str):
            out.append(TextSlot(body, "system", "system"))
        elif isinstance(system, list):
            _blocks(system, "system", out)
    for message in body.get("messages") or ():
        if not isinstance(message, dict):
            continue
        role = message.get("role") or "user"
        content = message.get("content")
        if isinstance(content, str):
            out.append(TextSlot(message, "content", role))
        elif isinstance(content, list):
            _blocks(content, role, out)
    return out
