"""Names shared across the gateway: ASGI aliases and the wire-format vocabulary.

Sluice uses the caller's JSON as its canonical form: an OpenAI-format body stays a
dict in OpenAI shape, an Anthropic-format body a dict in Anthropic shape. Translation
(`gateway.translate`) happens only when the caller's format differs from the
provider's, so the common same-format path forwards bytes with one field changed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from enum import Enum
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON = dict[str, Any]


class WireFormat(str, Enum):
    """The API dialect a caller speaks or a provider serves."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"


class Operation(str, Enum):
    CHAT = "chat"
    EMBEDDINGS = "embeddings"
    RESPONSES = "responses"
