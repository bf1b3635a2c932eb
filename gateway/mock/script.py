"""Scripted answers: rules set through POST /_mock/script make the mock behave like a
provider that changed (drift tests: longer answers, refusals, another language, a new
model behind the same name, broken JSON, a slower model).

    POST /_mock/script   [{"model": "m1", "words": 32}, {"text": "I'm sorry, I can't help.", "fraction": 0.3}]
    GET  /_mock/script   the rules;  DELETE /_mock/script  none

A rule applies to chat completions (+ Azure) and Anthropic messages whose requested model
(or Azure deployment) is `model` (any model when unset); the first rule that applies to a
request is used. What a rule changes (fields left unset change nothing):

    text                answer with this text (JSON mode and schemas included: a rule can
                        make a JSON answer invalid); "{prompt}" in it is the last user text
    texts               or one of these texts, drawn from a hash of the request
    words               (without text) answer "Mock answer to: <prompt>" padded or cut to this many words
    words_jitter        +- this many words, drawn from a hash of the request (natural variation)
    response_model      the `model` the answer names (a silent upstream model change)
    system_fingerprint  OpenAI's system_fingerprint in the answer
    finish_reason       the finish / stop reason as sent ("length", "max_tokens", ...)
    latency_ms          waited before answering, plus up to latency_jitter_ms more (hash-drawn)
    fraction            the share of requests the rule applies to, drawn from a hash of the
                        request body (deterministic: the same request is always drawn alike)

Everything drawn comes from the request's bytes, so a scripted mock stays a pure function
of the request (a cache test still gets the same answer twice).
"""

from __future__ import annotations

import zlib
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from gateway.mock.content import answer_words, last_user_text
from gateway.mock.replies import Reply

# Request keys that ask for structured output; a scripted `text` answers without them.
_FORMAT_KEYS = ("response_format", "output_config", "output_format")


class ScriptRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = None
    text: str | None = None
    texts: list[str] | None = Field(None, min_length=1)
    words: int | None = Field(None, ge=1, le=100_000)
    words_jitter: int = Field(0, ge=0)
    response_model: str | None = None
    system_fingerprint: str | None = None
    finish_reason: str | None = None
    latency_ms: float = Field(0.0, ge=0)
    latency_jitter_ms: float = Field(0.0, ge=0)
    fraction: float = Field(1.0, ge=0.0, le=1.0)


def _draw(raw: bytes, salt: int) -> float:
    """A number in [0, 1) from the request's bytes (deterministic)."""
    return zlib.crc32(raw, salt) / 2**32


class Script:
    """The active rules, in order."""

    def __init__(self) -> None:
        self.rules: list[ScriptRule] = []

    def replace(self, rules: list[ScriptRule]) -> None:
        self.rules = list(rules)

    def describe(self) -> list[dict[str, Any]]:
        return [rule.model_dump(exclude_defaults=True) for rule in self.rules]

    def match(self, model: str | None, raw: bytes) -> ScriptRule | None:
        for index, rule in enumerate(self.rules):
            if rule.model is not None and rule.model != model:
                continue
            if rule.fraction < 1.0 and _draw(raw, index) >= rule.fraction:
                continue
            return rule
        return None


def scripted_body(rule: ScriptRule, body: dict[str, Any], raw: bytes) -> dict[str, Any]:
    """The request as the endpoint should see it: the scripted answer text as `mock_reply`."""
    if rule.text is None and rule.texts is None and rule.words is None:
        return body
    prompt = last_user_text(body.get("messages") or [])
    chosen = rule.text if rule.text is not None else \
        rule.texts[int(_draw(raw, 3571) * len(rule.texts))] if rule.texts else None
    if chosen is not None:
        text = chosen.replace("{prompt}", prompt)
    else:
        text = " ".join(answer_words(prompt, _words(rule, raw)))
    changed = {k: v for k, v in body.items() if k not in _FORMAT_KEYS}
    changed["mock_reply"] = text
    return changed


def _words(rule: ScriptRule, raw: bytes) -> int:
    assert rule.words is not None
    if not rule.words_jitter:
        return rule.words
    span = 2 * rule.words_jitter + 1
    return max(1, rule.words - rule.words_jitter + int(_draw(raw, 7919) * span))


def delay_s(rule: ScriptRule, raw: bytes) -> float:
    return (rule.latency_ms + rule.latency_jitter_ms * _draw(raw, 104729)) / 1000.0


def rewrite_reply(rule: ScriptRule, reply: Reply) -> Reply:
    """The answer with the rule's response model, fingerprint and finish reason."""
    if rule.response_model is None and rule.system_fingerprint is None and rule.finish_reason is None:
        return reply
    if reply.status != 200:
        return reply
    if reply.events is None:
        reply.body = orjson.dumps(_rewrite(rule, orjson.loads(reply.body)))
        return reply
    reply.events = [_rewrite_event(rule, event) for event in reply.events]
    return reply


def _rewrite_event(rule: ScriptRule, event: bytes) -> bytes:
    head, sep, data = event.partition(b"data: ")
    if not sep or data.startswith(b"[DONE]"):
        return event
    return head + sep + orjson.dumps(_rewrite(rule, orjson.loads(data))) + b"\n\n"


def _rewrite(rule: ScriptRule, payload: Any) -> Any:
    """One JSON object of an answer (OpenAI completion or chunk, Anthropic message or event)."""
    if not isinstance(payload, dict):
        return payload
    target = payload.get("message") if payload.get("type") == "message_start" else payload
    if isinstance(target, dict):
        if rule.response_model is not None and "model" in target:
            target["model"] = rule.response_model
        if rule.system_fingerprint is not None and "system_fingerprint" in target:
            target["system_fingerprint"] = rule.system_fingerprint
        if rule.finish_reason is not None and target.get("stop_reason") is not None:
            target["stop_reason"] = rule.finish_reason
    if rule.finish_reason is not None:
        for choice in payload.get("choices") or ():
            if isinstance(choice, dict) and choice.get("finish_reason") is not None:
                choice["finish_reason"] = rule.finish_reason
        delta = payload.get("delta")
        if payload.get("type") == "message_delta" and isinstance(delta, dict) and delta.get("stop_reason"):
            delta["stop_reason"] = rule.finish_reason
    return payload
