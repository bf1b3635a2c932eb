"""Failure injection: rules set through POST /_mock/faults, or named by the requested model.

Model names that fail on every request (handy in a gateway config, no control call needed):

    fail-<status>   reply with that status and a provider-shaped error (fail-500, fail-503, ...);
                    fail-429 adds `Retry-After: 1`
    fail-timeout    accept the request and never answer (until the client disconnects)
    fail-drop       close the connection without any response
    fail-midstream  stream a few events, then close the connection without the terminal event
    fail-stream-error  answer a stream with 200 and an error event first (Anthropic's
                    `overloaded_error` mid-stream, OpenAI's `{"error": ...}` data event)
    slow-<ms>       answer normally after <ms> extra milliseconds
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

FaultMode = Literal["status", "timeout", "drop", "midstream_drop", "slow", "stream_error"]


class FaultRule(BaseModel):
    """One rule; it applies to the next `count` matching requests (None: to all of them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: FaultMode
    status: int = Field(500, ge=400, le=599)
    retry_after: float | None = Field(None, ge=0)  # seconds, sent as the Retry-After header
    count: int | None = Field(None, ge=1)
    path: str | None = None  # applies to request paths starting with this
    model: str | None = None  # applies to this requested model (or Azure deployment) only
    delay_ms: float = Field(0, ge=0)  # waited before the fault acts (the whole fault, for "slow")
    after_events: int = Field(2, ge=0)  # midstream_drop: events sent before the connection is cut

    def matches(self, path: str, model: str | None) -> bool:
        return (self.path is None or path.startswith(self.path)) and (self.model is None or self.model == model)


class FaultBook:
    """The active rules, in order; the first rule that matches a request is used up by it."""

    def __init__(self) -> None:
        self._rules: list[FaultRule] = []
        self._remaining: list[int | None] = []

    def replace(self, rules: list[FaultRule]) -> None:
        self._rules = list(rules)
        self._remaining = [rule.count for rule in rules]

    def clear(self) -> None:
        self.replace([])

    def take(self, path: str, model: str | None) -> FaultRule | None:
        """The rule for this request, counting it; None when no rule matches."""
        if not self._rules:
            return None
        for index, rule in enumerate(self._rules):
            if rule.matches(path, model):
                remaining = self._remaining[index]
                if remaining is not None:
                    if remaining <= 1:
                        del self._rules[index], self._remaining[index]
                    else:
                        self._remaining[index] = remaining - 1
                return rule
        return None

    def describe(self) -> list[dict[str, object]]:
        return [{**rule.model_dump(), "remaining": left} for rule, left in zip(self._rules, self._remaining)]


def fault_from_model(model: str | None) -> FaultRule | None:
    """The fault a model name asks for (see the module docstring); None for ordinary names."""
    if not model or not model.startswith(("fail-", "slow-")):
        return None
    kind, _, arg = model.partition("-")
    if kind == "slow":
        return FaultRule(mode="slow", delay_ms=float(arg)) if arg.isdigit() else None
    if arg.isdigit() and len(arg) == 3 and 400 <= int(arg) <= 599:
        status = int(arg)
        return FaultRule(mode="status", status=status, retry_after=1 if status == 429 else None)
    named: dict[str, FaultMode] = {"timeout": "timeout", "drop": "drop", "midstream": "midstream_drop",
                                   "stream-error": "stream_error"}
    return FaultRule(mode=named[arg]) if arg in named else None
