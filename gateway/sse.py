"""Server-sent events: split an upstream byte stream into events and encode new ones.

Upstream chunks arrive at arbitrary boundaries; `SSEBuffer` yields complete event
blocks (without the blank-line terminator) so each can be forwarded verbatim or parsed.
"""

from __future__ import annotations

import orjson

DONE = b"[DONE]"


class SSEBuffer:
    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n")
        data = self._pending + chunk if self._pending else chunk
        if b"\n\n" not in data:
            self._pending = data
            return []
        *events, self._pending = data.split(b"\n\n")
        return [e for e in events if e]

    @property
    def leftover(self) -> bytes:
        return self._pending.strip()


def event_data(block: bytes) -> bytes | None:
    """The `data:` payload of one event block (multi-line data joined), None if absent."""
    if block.startswith(b"data: ") and b"\n" not in block:
        return block[6:]                       # the common single-line case, no split
    data = [line[5:].lstrip(b" ") for line in block.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(data) if data else None


def openai_event(obj: object) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


OPENAI_DONE = b"data: [DONE]\n\n"


def anthropic_event(event: str, obj: object) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"
