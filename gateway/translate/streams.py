"""Stream translation, one event at a time, in both directions.

Each translator is a small state machine built per request and fed parsed SSE `data`
objects in order; it returns what to send right away and never holds text back, so the
caller's time to first token stays the provider's. State is a few counters and maps,
dropped with the request.

- `AnthropicStreamToOpenAI`: Anthropic events -> OpenAI `chat.completion.chunk` dicts: a
  role chunk first, content and tool-call deltas (id and name first, then argument
  fragments), a finish chunk on `message_stop`, then (if the caller asked for
  `stream_options.include_usage`) a usage chunk with `choices: []`.
- `OpenAIStreamToAnthropic`: OpenAI chunks -> `(event_type, data)` Anthropic events:
  `message_start` with an empty message, one start/delta.../stop run per content block
  with increasing indices, then on `finish()` `message_delta` (stop reason, usage) and
  `message_stop`. OpenAI reports token counts only at the end, so `message_start` carries
  zero usage and `message_delta` the real totals (the SDK takes counts from both).

An upstream error event mid-stream becomes the caller's error shape (`{"error": {...}}` /
`("error", {...})`), which both SDKs raise; the gateway decides what follows it.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from gateway.translate.usage import (
    anthropic_usage_to_openai,
    finish_reason_from_anthropic,
    openai_usage_to_anthropic,
    stop_reason_from_openai,
)

AnthropicEvent = tuple[str, dict]


def _event(kind: str, **fields: Any) -> AnthropicEvent:
    """An Anthropic SSE event: the `event:` name and its data, which repeats it as `type`."""
    return kind, {"type": kind, **fields}


class AnthropicStreamToOpenAI:
    """Anthropic Messages stream events -> OpenAI chat completion chunks."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self._model = model             # until message_start names the model that answers
        self._include_usage = include_usage
        self._id = f"chatcmpl-{uuid.uuid4().hex}"
        self._created = int(time.time())
        self._tool_index: dict[int, int] = {}  # Anthropic block index -> OpenAI tool_calls index
        self._tool_has_arguments: dict[int, bool] = {}
        self._anthropic_usage: dict[str, int] = {}
        self._stop_reason: str | None = None
        self.usage: dict | None = None  # OpenAI-shaped, once the upstream reported counts

    def feed(self, event: dict) -> list[dict]:
        kind = event.get("type")
        if kind == "content_block_delta":  # the hot path: one per token batch
            return self._delta(event)
        if kind == "message_start":
            message = event.get("message") or {}
            if message.get("id"):
                self._id = f"chatcmpl-{message['id']}"
            self._model = message.get("model") or self._model
            self._record_usage(message.get("usage"))
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            return self._block_start(event["index"], event.get("content_block") or {})
        if kind == "content_block_stop":
            return self._block_stop(event["index"])
        if kind == "message_delta":
            self._stop_reason = (event.get("delta") or {}).get("stop_reason") or self._stop_reason
            self._record_usage(event.get("usage"))
            return []
        if kind == "message_stop":
            finish = self._chunk({}, finish_reason_from_anthropic(self._stop_reason))
            if not self._include_usage:
                return [finish]
            return [finish, self._envelope([], self.usage or anthropic_usage_to_openai({}))]
        if kind == "error":
            error = event.get("error") or {}
            message = error.get("message") or "upstream stream error"
            kind = error.get("type") or "api_error"
            return [{"error": {"message": message, "type": kind, "param": None, "code": None}}]
        return []  # ping, and event types added after this was written

    def _record_usage(self, usage: Any) -> None:
        if not usage:
            return
        # Counts are cumulative; absent or null ones keep the earlier value.
        self._anthropic_usage.update({key: value for key, value in usage.items() if isinstance(value, int)})
        self.usage = anthropic_usage_to_openai(self._anthropic_usage)

    def _block_start(self, index: int, block: dict) -> list[dict]:
        kind = block.get("type")
        if kind == "text":
            return [self._chunk({"content": block["text"]})] if block.get("text") else []
        if kind != "tool_use":
            return []  # thinking and server-tool blocks have no Chat Completions form
        position = len(self._tool_index)
        self._tool_index[index] = position
        self._tool_has_arguments[index] = False
        call = {
            "index": position,
            "id": block["id"],
            "type": "function",
            "function": {"name": block["name"], "arguments": ""},
        }
        return [self._chunk({"tool_calls": [call]})]

    def _delta(self, event: dict) -> list[dict]:
        delta = event.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta":
            return [self._chunk({"content": delta["text"]})] if delta.get("text") else []
        if kind == "input_json_delta" and delta.get("partial_json"):
            index = event["index"]
            if index not in self._tool_index:
                return []
            self._tool_has_arguments[index] = True
            return [self._arguments_chunk(index, delta["partial_json"])]
        return []  # thinking, signature and citation deltas

    def _block_stop(self, index: int) -> list[dict]:
        if self._tool_has_arguments.get(index) is False:
            # A tool without parameters streams no JSON; OpenAI callers expect "{}".
            self._tool_has_arguments[index] = True
            return [self._arguments_chunk(index, "{}")]
        return []

    def _arguments_chunk(self, index: int, fragment: str) -> dict:
        call = {"index": self._tool_index[index], "function": {"arguments": fragment}}
        return self._chunk({"tool_calls": [call]})

    def _chunk(self, delta: dict, finish_reason: str | None = None) -> dict:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        return self._envelope([choice], None)

    def _envelope(self, choices: list, usage: dict | None) -> dict:
        chunk = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": choices,
        }
        if self._include_usage:
            chunk["usage"] = usage  # OpenAI sends null on every chunk but the last
        return chunk


class OpenAIStreamToAnthropic:
    """OpenAI chat completion chunks -> Anthropic Messages stream events."""

    def __init__(self, model: str) -> None:
        self._model = model             # until the first chunk names the model that answers
        self._started = False
        self._open_index: int | None = None
        self._open_kind: str | None = None
        self._next_index = 0
        self._tools: dict[int, int] = {}  # OpenAI tool_calls index -> Anthropic block index
        self._finish_reason: str | None = None
        self._refused = False
        self.usage: dict | None = None  # Anthropic-shaped, once the upstream reported counts

    def feed(self, chunk: dict) -> list[AnthropicEvent]:
        if chunk.get("error") and not chunk.get("choices"):
            error = chunk["error"]
            message = error.get("message") if isinstance(error, dict) else str(error)
            message = message or "upstream stream error"
            return [_event("error", error={"type": "api_error", "message": message})]
        events: list[AnthropicEvent] = []
        if not self._started:
            self._model = chunk.get("model") or self._model
            events.append(self._message_start(chunk.get("id")))
        if chunk.get("usage"):
            self.usage = openai_usage_to_anthropic(chunk["usage"])
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue  # only one choice is ever requested
            delta = choice.get("delta") or {}
            if delta.get("content"):
                self._text(delta["content"], events)
            if delta.get("refusal"):
                self._refused = True
                self._text(delta["refusal"], events)
            for call in delta.get("tool_calls") or ():
                self._tool_call(call, events)
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
        return events

    def finish(self) -> list[AnthropicEvent]:
        events: list[AnthropicEvent] = []
        if not self._started:
            events.append(self._message_start(None))
        self._close(events)
        if self._refused:
            stop_reason = "refusal"
        elif self._tools and self._finish_reason in (None, "stop"):
            stop_reason = "tool_use"  # some OpenAI-compatible servers say "stop" after tool calls
        else:
            stop_reason = stop_reason_from_openai(self._finish_reason)
        usage = self.usage or openai_usage_to_anthropic({})
        delta = {"stop_reason": stop_reason, "stop_sequence": None}
        events.append(_event("message_delta", delta=delta, usage=usage))
        events.append(_event("message_stop"))
        return events

    def _message_start(self, upstream_id: str | None) -> AnthropicEvent:
        self._started = True
        message = {
            "id": f"msg_{upstream_id or uuid.uuid4().hex}",
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return _event("message_start", message=message)

    def _open(self, block: dict, events: list[AnthropicEvent]) -> int:
        self._close(events)
        index = self._next_index
        self._next_index += 1
        self._open_index, self._open_kind = index, block["type"]
        events.append(_event("content_block_start", index=index, content_block=block))
        return index

    def _close(self, events: list[AnthropicEvent]) -> None:
        if self._open_index is not None:
            events.append(_event("content_block_stop", index=self._open_index))
            self._open_index = self._open_kind = None

    def _text(self, text: str, events: list[AnthropicEvent]) -> None:
        if self._open_kind == "text":
            index = self._open_index
        else:
            index = self._open({"type": "text", "text": ""}, events)
        events.append(_event("content_block_delta", index=index, delta={"type": "text_delta", "text": text}))

    def _tool_call(self, call: dict, events: list[AnthropicEvent]) -> None:
        position = call.get("index", 0)
        function = call.get("function") or {}
        index = self._tools.get(position)
        if index is None:
            block = {
                "type": "tool_use",
                "id": call.get("id") or f"toolu_{uuid.uuid4().hex[:24]}",
                "name": function.get("name") or "",
                "input": {},
            }
            index = self._tools[position] = self._open(block, events)
        if function.get("arguments"):
            delta = {"type": "input_json_delta", "partial_json": function["arguments"]}
            events.append(_event("content_block_delta", index=index, delta=delta))
