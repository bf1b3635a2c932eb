"""Turn an upstream SSE stream (provider format) into the caller's SSE stream.

Same format: each event is parsed once (for usage, finish reason and text) and the
original bytes are forwarded untouched. Cross format: events go through the stream
translators of `gateway.translate` and are re-encoded. Either way a reader in the
caller's format follows the stream, so what the gateway records does not depend on
which provider answered.
"""

from __future__ import annotations

from typing import NamedTuple

import orjson

from gateway.sse import (
    DONE,
    OPENAI_DONE,
    SSEBuffer,
    anthropic_event,
    event_data,
    openai_event,
)
from gateway.translate import AnthropicStreamToOpenAI, OpenAIStreamToAnthropic
from gateway.types import JSON, WireFormat
from gateway.wire.anthropic import MessageStreamReader
from gateway.wire.openai import ChatStreamReader
from gateway.wire.summary import ResponseSummary


class OutEvent(NamedTuple):
    """One event for the caller: its Anthropic event name (None for OpenAI), the parsed
    object (None for `[DONE]`) and the bytes to send."""

    name: str | None
    obj: JSON | None
    raw: bytes


class StreamConverter:
    """Feed raw upstream bytes, get caller-format bytes; `done` once the terminal event passed."""

    def __init__(self, caller: WireFormat, provider: WireFormat, model: str, summary: ResponseSummary,
                 *, drop_usage_chunk: bool = False, include_usage: bool = False):
        self._buffer = SSEBuffer()
        self._caller = caller
        self.done = False
        self.reader: ChatStreamReader | MessageStreamReader
        if caller is WireFormat.OPENAI:
            self.reader = ChatStreamReader(summary)
        else:
            self.reader = MessageStreamReader(summary)
        # The gateway may ask an OpenAI upstream for usage the caller did not request;
        # then OpenAI's usage-only chunk is read but not forwarded. Only OpenAI has such a
        # chunk: Anthropic's message_delta also carries usage and no choices, and is the
        # event that holds the stop reason.
        self._drop_usage_chunk = drop_usage_chunk and (caller, provider) == (WireFormat.OPENAI, WireFormat.OPENAI)
        self._to_openai = AnthropicStreamToOpenAI(model, include_usage) \
            if (caller, provider) == (WireFormat.OPENAI, WireFormat.ANTHROPIC) else None
        self._to_anthropic = OpenAIStreamToAnthropic(model) \
            if (caller, provider) == (WireFormat.ANTHROPIC, WireFormat.OPENAI) else None

    def feed(self, chunk: bytes) -> bytes:
        return b"".join(e.raw for e in self.events(chunk))

    def events(self, chunk: bytes) -> list[OutEvent]:
        """The caller-format events completed by this chunk (parsed, with their bytes)."""
        out: list[OutEvent] = []
        for block in self._buffer.feed(chunk):
            data = event_data(block)
            if data is None:
                continue                                # comments / keep-alives
            if data == DONE:
                self._on_done(out)
                continue
            try:
                event: JSON = orjson.loads(data)
            except orjson.JSONDecodeError:
                continue
            if self._to_openai is not None:
                for c in self._to_openai.feed(event):
                    self.reader.feed(c)
                    out.append(OutEvent(None, c, openai_event(c)))
                if event.get("type") == "message_stop":
                    out.append(OutEvent(None, None, OPENAI_DONE))
                    self.done = True
            elif self._to_anthropic is not None:
                for kind, e in self._to_anthropic.feed(event):
                    self.reader.feed(e)
                    out.append(OutEvent(kind, e, anthropic_event(kind, e)))
            else:
                self.reader.feed(event)
                if event.get("type") == "message_stop":
                    self.done = True
                if self._drop_usage_chunk and event.get("choices") == [] and event.get("usage"):
                    continue
                out.append(OutEvent(event.get("type") if self._caller is WireFormat.ANTHROPIC else None,
                                    event, block + b"\n\n"))
        return out

    def _on_done(self, out: list[OutEvent]) -> None:
        if self._to_anthropic is not None:
            for kind, e in self._to_anthropic.finish():
                self.reader.feed(e)
                out.append(OutEvent(kind, e, anthropic_event(kind, e)))
        else:
            out.append(OutEvent(None, None, OPENAI_DONE))
        self.done = True

    def assembled(self) -> JSON:
        return self.reader.assembled()
