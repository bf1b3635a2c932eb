"""What the mock says: deterministic answers, word counts, JSON from schemas, embeddings.

Everything here is a pure function of the request, so a test can predict the answer
(and a cache test can rely on the same prompt giving the same text and vector).
"""

from __future__ import annotations

import base64
import hashlib
import math
import sys
from array import array
from typing import Any

import orjson

from gateway.mock.schemas import example_from_schema  # noqa: F401  (the wire modules import it from here)

ANSWER_PREFIX: tuple[str, ...] = ("Mock", "answer", "to:")
TOOL_ANSWER_PREFIX: tuple[str, ...] = ("Mock", "answer", "from", "tool", "result:")
FILLER: tuple[str, ...] = tuple(
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
    "incididunt ut labore et dolore magna aliqua".split()
)
PER_MESSAGE_TOKENS = 3  # a small constant per message, like real chat templates
JSON_FRAGMENT_CHARS = 8  # how a JSON answer or tool arguments are cut into stream deltas


def count_words(content: Any) -> int:
    """Whitespace words of a message content in any of the three wire formats.

    Strings count directly; lists are parts or blocks; dicts contribute their "text"
    and nested "content" (tool results), which covers OpenAI parts, Anthropic blocks
    and Responses input items without knowing which format it is.
    """
    if isinstance(content, str):
        return len(content.split())
    if isinstance(content, list):
        return sum(count_words(part) for part in content)
    if isinstance(content, dict):
        return count_words(content.get("text")) + count_words(content.get("content"))
    return 0


def prompt_tokens(messages: list[Any], system: Any = None) -> int:
    """prompt tokens = words of all text content + 3 per message (+ the system words)."""
    total = count_words(system)
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else message
        total += count_words(content) + PER_MESSAGE_TOKENS
    return total


def first_text(content: Any) -> str:
    """The first text of a message content (string, parts or blocks)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        for part in content:
            text = first_text(part)
            if text:
                return text
    if isinstance(content, dict):
        text = content.get("text")
        if isinstance(text, str):
            return text
        return first_text(content.get("content"))
    return ""


def joined_text(content: Any) -> str:
    """All the text of a content (string, parts, blocks, nested tool-result content), space-joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(filter(None, (joined_text(part) for part in content)))
    if isinstance(content, dict):
        text = content.get("text")
        return text if isinstance(text, str) else joined_text(content.get("content"))
    return ""


def last_user_text(messages: list[Any]) -> str:
    """The text the answer echoes: the last user turn (the whole input if it is a string).

    Responses input items that are not messages (function_call, function_call_output)
    have no role and are skipped.
    """
    for message in reversed(messages):
        if (isinstance(message, dict) and message.get("role", "user") == "user"
                and message.get("type", "message") == "message"):
            return first_text(message.get("content"))
    return ""


def answer_words(prompt: str, output_tokens: int, prefix: tuple[str, ...] = ANSWER_PREFIX) -> list[str]:
    """ "Mock answer to: <the prompt's words>" padded with filler to output_tokens words.

    Echoing the prompt lets tests see what reached the provider (a redacted text, a
    placeholder the gateway must restore) in the answer itself.
    """
    words = [*prefix, *prompt.split()]
    if len(words) >= output_tokens:
        return words[: max(output_tokens, 1)]
    words.extend(FILLER[i % len(FILLER)] for i in range(output_tokens - len(words)))
    return words


def reply_words(body: dict[str, Any], prompt: str, output_tokens: int,
                prefix: tuple[str, ...] = ANSWER_PREFIX) -> list[str]:
    """The answer's words: `mock_reply` from the request when given (tests that need a
    provider to *say* something, e.g. PII it was never sent), else the echo above."""
    scripted = body.get("mock_reply")
    if isinstance(scripted, str) and scripted:
        return scripted.split(" ")
    return answer_words(prompt, output_tokens, prefix)


def tool_answer_words(body: dict[str, Any], results: list[str], output_tokens: int) -> list[str]:
    """The text answer to a conversation that ends with tool results: "Mock answer from
    tool result: <what the tools returned>", so a test sees the result reached the model.

    A model that has just been given a tool's answer replies rather than calling the
    tool again; answering so is what lets a client's agent loop end.
    """
    return reply_words(body, " ".join(results), output_tokens, TOOL_ANSWER_PREFIX)


def next_tool(tools: list[dict[str, Any]], names: list[Any], called: set[str]) -> dict[str, Any]:
    """The tool a model calls next: the first (`names` parallel to `tools`) not called yet
    in this conversation, else the first. An agent offered a work tool and an output tool
    (pydantic-ai's `final_result`) so calls the work tool, then the output tool."""
    return next((tool for tool, name in zip(tools, names, strict=True) if name not in called), tools[0])


def structured_fragments(schema: Any, words: list[str] | None = None) -> list[str]:
    """The stream fragments of a structured answer: JSON built from `schema`, or in JSON
    mode without a schema (`schema` None) an object holding the text answer `words`."""
    value = {"answer": " ".join(words or ())} if schema is None else example_from_schema(schema)
    return fixed_fragments(orjson.dumps(value).decode())


def word_fragments(words: list[str]) -> list[str]:
    """Stream deltas of a text answer: one word each, the space in front."""
    return [words[0], *(" " + word for word in words[1:])] if words else []


def fixed_fragments(text: str, size: int = JSON_FRAGMENT_CHARS) -> list[str]:
    """Stream deltas of a JSON text (tool arguments, JSON mode): fixed-size slices."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def limit_fragments(fragments: list[str], limit: Any) -> tuple[list[str], bool]:
    """Cut an answer to a max_tokens limit: (kept fragments, truncated?)."""
    if isinstance(limit, int) and not isinstance(limit, bool) and 0 < limit < len(fragments):
        return fragments[:limit], True
    return fragments, False


def embedding_vector(data: bytes, dim: int) -> array:
    """A deterministic unit vector (float32) from a hash of the input.

    shake_256 gives as many bytes as the dimension needs; read as int16 they are centred
    on zero, so the vectors point in unrelated directions for unrelated inputs.
    """
    raw = array("h", hashlib.shake_256(data).digest(2 * dim))
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return array("f", [v / norm for v in raw])


def embedding_base64(vector: array) -> str:
    """OpenAI's base64 encoding: little-endian float32 bytes."""
    if sys.byteorder != "little":
        vector = array("f", vector)
        vector.byteswap()
    return base64.b64encode(vector.tobytes()).decode("ascii")


def embedding_inputs(value: Any) -> list[tuple[bytes, int]] | None:
    """The inputs of an embeddings request as (hash key, token count); None if invalid.

    Accepts a string, a list of strings, a token list, or a list of token lists.
    """
    if isinstance(value, str):
        return [(value.encode(), len(value.split()))] if value else None
    if not isinstance(value, list) or not value:
        return None
    if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return [(array("q", value).tobytes(), len(value))]
    inputs: list[tuple[bytes, int]] = []
    for item in value:
        if isinstance(item, str) and item:
            inputs.append((item.encode(), len(item.split())))
        elif isinstance(item, list) and item and all(isinstance(v, int) for v in item):
            inputs.append((array("q", item).tobytes(), len(item)))
        else:
            return None
    return inputs
