"""Where a request's grounding context is, and what the question was.

`llm_requests.prompt_text` holds the conversation as lines `role: content` (the gateway's
wire modules write it). The context of a request is, in this order (`ContextRule`):

1. tool results: the content of every `tool` message (function / tool call results);
2. text inside `<context>`, `<document>` or `<documents>` tags (any attributes, any case),
   in the system, user or tool messages (`ContextRule.tags`, `roles`);
3. text after a line that starts with `Context:` or `Documents:` (`line_prefixes`), up to
   the next line that starts with another label (`Question:`, `Answer:`, any `Word:`) or
   the end of the message.

A request with less than `min_chars` of context has none: grounding skips it (it cannot be
grounded in anything but the model's own knowledge, which the judge and self-consistency
evaluators look at instead). The question is the last user message with its context parts
removed. Content written as `role: text` inside a message is indistinguishable from a new
message; that only splits the context differently, it never loses text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from monitoring.evaluators.config import ContextRule

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_MESSAGE = re.compile(rf"^({'|'.join(ROLES)}): ?", re.MULTILINE)
_LABEL = re.compile(r"^\s*[A-Z][A-Za-z ]{0,30}:\s")


@dataclass(frozen=True, slots=True)
class Grounding:
    context: str          # "" when the request carries none
    question: str
    sources: tuple[str, ...] = ()   # which rules found it: tool, tag:<name>, prefix:<prefix>


def parse_messages(prompt_text: str) -> list[tuple[str, str]]:
    """[(role, content)] from `prompt_text`; text before the first role line is a user message."""
    messages: list[tuple[str, str]] = []
    matches = list(_MESSAGE.finditer(prompt_text))
    if not matches:
        return [("user", prompt_text)] if prompt_text.strip() else []
    if matches[0].start() > 0 and prompt_text[:matches[0].start()].strip():
        messages.append(("user", prompt_text[:matches[0].start()].strip()))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(prompt_text)
        messages.append((match.group(1), prompt_text[match.end():end].strip()))
    return messages


def _tag_pattern(tags: list[str]) -> re.Pattern[str] | None:
    if not tags:
        return None
    names = "|".join(re.escape(t) for t in tags)
    return re.compile(rf"<({names})\b[^>]*>(.*?)</\1\s*>", re.DOTALL | re.IGNORECASE)


def _after_prefixes(text: str, prefixes: list[str]) -> tuple[list[str], str, list[str]]:
    """(context parts, the text without them, the prefixes that matched)."""
    lines = text.splitlines()
    parts: list[str] = []
    kept: list[str] = []
    found: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        prefix = next((p for p in prefixes if line.lstrip().lower().startswith(p.lower())), None)
        if prefix is None:
            kept.append(line)
            i += 1
            continue
        found.append(prefix)
        block = [line.lstrip()[len(prefix):].strip()]
        i += 1
        while i < len(lines) and not _LABEL.match(lines[i]):
            block.append(lines[i])
            i += 1
        parts.append("\n".join(block).strip())
    return parts, "\n".join(kept), found


def extract_grounding(prompt_text: str, rule: ContextRule) -> Grounding:
    """The context and the question of one request (see the module docstring)."""
    messages = parse_messages(prompt_text)
    tags = _tag_pattern(rule.tags)
    parts: list[str] = []
    sources: list[str] = []
    question = ""
    for role, content in messages:
        rest = content
        if role in ("tool", "function") and rule.tool_results:
            parts.append(content)
            sources.append("tool")
            continue
        if role in rule.roles:
            if tags is not None:
                for match in tags.finditer(content):
                    parts.append(match.group(2).strip())
                    sources.append(f"tag:{match.group(1).lower()}")
                rest = tags.sub(" ", content)
            found, rest, prefixes = _after_prefixes(rest, rule.line_prefixes)
            parts += found
            sources += [f"prefix:{p}" for p in prefixes]
        if role == "user":
            question = rest.strip()
    context = "\n\n".join(p for p in parts if p)
    if len(context) < rule.min_chars:
        context = ""
    return Grounding(context, _strip_question_label(question), tuple(dict.fromkeys(sources)))


def _strip_question_label(text: str) -> str:
    return re.sub(r"^\s*question:\s*", "", text, flags=re.IGNORECASE).strip()
