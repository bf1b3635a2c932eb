"""What the gateway learns from an answer, whatever its format."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.providers.base import Usage


@dataclass(slots=True)
class ResponseSummary:
    usage: Usage = field(default_factory=Usage)
    finish_reason: str | None = None
    response_id: str | None = None
    response_model: str | None = None
    system_fingerprint: str | None = None
    text_parts: list[str] = field(default_factory=list)
    complete: bool = False          # the stream reached its terminal event

    @property
    def text(self) -> str:
        return "".join(self.text_parts)
