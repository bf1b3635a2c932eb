"""The guardrail steps of the pipeline: the gateway side of `guardrails.GuardrailEngine`.

The engine works on plain strings; this module finds those strings in a request or an
answer of either wire format and writes the rewritten ones back. Input: block, or
rewrite what the provider sees (redact / mask). Output: restore mask placeholders and
redact or block, on a whole answer or on a stream's text deltas as they pass.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.context import RequestContext
from gateway.errors import GuardrailBlocked
from gateway.sse import anthropic_event, openai_event
from gateway.streaming import OutEvent
from gateway.types import JSON, WireFormat
from gateway.wire.text import text_slots
from guardrails import GuardrailEngine, Policy
from guardrails.results import GuardrailResult, Violation


def _record(ctx: RequestContext, results: list[GuardrailResult], t0: float, stage: str) -> None:
    t1 = time.perf_counter()
    ctx.guardrail_results.extend(results)
    ctx.guardrail_ms = (ctx.guardrail_ms or 0.0) + (t1 - t0) * 1000
    # "pii:mask", "pii.output:redact", "pii:error"; with the limit that stopped a guardrail:
    # "pii:error.busy", "pii:block.oversize", "pii:mask.prefix" (metrics and request rows).
    actions = [f"{r.name}:{r.label}" if r.stage == "input" else f"{r.name}.output:{r.label}" for r in results]
    ctx.guardrail_actions.extend(actions)
    attrs: dict[str, Any] = {"sluice.guardrail.actions": [f"{r.name}:{r.label}" for r in results]}
    for r in results:
        for entity, count in r.entity_counts.items():
            attrs[f"sluice.guardrail.{r.name}.{entity}"] = count      # counts and types, never values
        for category, score in r.scores.items():
            attrs[f"sluice.guardrail.{r.name}.score.{category}"] = round(score, 4)
    ctx.steps.append((f"sluice.guardrail.{stage}", t0, t1, attrs))


def _blocked(v: Violation) -> GuardrailBlocked:
    err = GuardrailBlocked(v.message, status=v.status)
    err.code = v.code
    return err


@dataclass(slots=True)
class GuardState:
    """What the output side needs from the input side, for one request."""

    engine: GuardrailEngine
    policy: Policy | None
    tenant: str = ""                 # whose share of the guardrail threads the scans use
    restorer: Any = None
    modified_output: bool = False


async def guard_input(engine: GuardrailEngine, policy: Policy, ctx: RequestContext,
                      body: JSON) -> tuple[JSON, GuardState]:
    """Run the input guardrails; return the body to send on (a rewritten copy if needed)."""
    slots = text_slots(body, ctx.api_format)
    state = GuardState(engine, policy, ctx.principal.tenant)
    if not slots:
        return body, state
    t0 = time.perf_counter()
    outcome = await engine.check_input(policy, [s.text for s in slots], [s.role for s in slots], state.tenant)
    _record(ctx, outcome.results, t0, "input")
    if outcome.violation is not None:
        raise _blocked(outcome.violation)
    if outcome.texts is not None:
        body = orjson.loads(orjson.dumps(body))          # never edit the caller's object in place
        for slot, text in zip(text_slots(body, ctx.api_format), outcome.texts, strict=True):
            if slot.text != text:
                slot.set(text)
    state.restorer = outcome.restorer
    return body, state


def _answer_text_slots(answer: JSON, fmt: WireFormat) -> list[tuple[dict, str]]:
    if fmt is WireFormat.ANTHROPIC:
        return [(b, "text") for b in answer.get("content") or () if b.get("type") == "text"]
    slots = []
    for choice in answer.get("choices") or ():
        message = choice.get("message") or {}
        if isinstance(message.get("content"), str):
            slots.append((message, "content"))
    return slots


async def guard_answer(state: GuardState, ctx: RequestContext, answer: JSON) -> JSON:
    """Output guardrails on a complete answer; returns the (possibly rewritten) answer."""
    slots = _answer_text_slots(answer, ctx.api_format)
    if not slots or state.engine.output_scanner(state.policy, state.restorer, state.tenant) is None:
        return answer
    t0 = time.perf_counter()
    results: list[GuardrailResult] = []
    answer = orjson.loads(orjson.dumps(answer))
    for holder, key in _answer_text_slots(answer, ctx.api_format):
        outcome = await state.engine.check_output(state.policy, holder[key], state.restorer, state.tenant)
        results.extend(outcome.results)
        if outcome.violation is not None:
            _record(ctx, results, t0, "output")
            raise _blocked(outcome.violation)
        holder[key] = outcome.text
        state.modified_output |= outcome.modified
    _record(ctx, results, t0, "output")
    return answer


@dataclass
class StreamGuard:
    """Rewrites a stream's text deltas through one output scanner per choice / block.

    A scanner holds back at most a short window (the longest placeholder or pattern), so
    the caller's time to first token stays close to the provider's.
    """

    state: GuardState
    ctx: RequestContext
    _scanners: dict[int, Any] = field(default_factory=dict)
    _t0: float = field(default_factory=time.perf_counter)

    def _scanner(self, index: int):
        scanner = self._scanners.get(index)
        if scanner is None:
            scanner = self._scanners[index] = self.state.engine.output_scanner(
                self.state.policy, self.state.restorer, self.state.tenant)
        return scanner

    async def apply(self, events: list[OutEvent]) -> bytes:
        out: list[bytes] = []
        openai = self.ctx.api_format is WireFormat.OPENAI
        for ev in events:
            obj = ev.obj
            if obj is None:
                out.append(ev.raw)
                continue
            if openai:
                await self._openai(obj, ev, out)
            else:
                await self._anthropic(ev.name, obj, ev, out)
        return b"".join(out)

    async def _feed(self, index: int, text: str) -> str:
        step = await self._scanner(index).feed(text)
        if step.violation is not None:
            self.finish_results()
            raise _blocked(step.violation)
        return step.emit

    async def _flush(self, index: int) -> str:
        scanner = self._scanners.get(index)
        if scanner is None:
            return ""
        step = await scanner.finish()
        if step.violation is not None:
            self.finish_results()
            raise _blocked(step.violation)
        return step.emit

    async def _openai(self, obj: JSON, ev: OutEvent, out: list[bytes]) -> None:
        choices = obj.get("choices") or ()
        changed = False
        for choice in choices:
            index = choice.get("index", 0)
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str) and delta["content"]:
                delta["content"] = await self._feed(index, delta["content"])
                changed = True
            if choice.get("finish_reason"):
                rest = await self._flush(index)
                if rest:
                    head = {k: v for k, v in obj.items() if k not in ("choices", "usage")}
                    out.append(openai_event({**head, "choices": [{"index": index, "delta": {"content": rest},
                                                                  "finish_reason": None}]}))
        out.append(openai_event(obj) if changed or any(c.get("finish_reason") for c in choices) else ev.raw)

    async def _anthropic(self, name: str | None, obj: JSON, ev: OutEvent, out: list[bytes]) -> None:
        kind = obj.get("type")
        if kind == "content_block_delta" and (obj.get("delta") or {}).get("type") == "text_delta":
            obj["delta"]["text"] = await self._feed(obj.get("index", 0), obj["delta"].get("text", ""))
            out.append(anthropic_event(kind, obj))
            return
        if kind == "content_block_stop":
            index = obj.get("index", 0)
            rest = await self._flush(index)
            if rest:
                out.append(anthropic_event("content_block_delta", {
                    "type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": rest}}))
        out.append(ev.raw)

    def finish_results(self) -> None:
        """Put the scanners' results in the trace (once, when the stream ends)."""
        scanners, self._scanners = list(self._scanners.values()), {}
        self.state.modified_output |= any(s.redacted for s in scanners)
        _record(self.ctx, [r for s in scanners for r in s.results], self._t0, "output")
