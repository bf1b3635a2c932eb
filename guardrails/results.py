"""What guardrails report back: results for the trace, violations for the caller.

Nothing here ever holds a detected value: results carry entity types, counts,
scores and the action; violation messages name types and categories only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from guardrails.masking import Restorer

GuardrailName = Literal["pii", "toxicity", "injection"]
Stage = Literal["input", "output"]
Action = Literal["pass", "block", "redact", "mask", "flag", "error"]

# Content the policy refuses is the caller's problem (400); a guardrail that could not
# decide and fails closed is ours (503), so clients may retry.
STATUS_CONTENT = 400
STATUS_GUARDRAIL_UNAVAILABLE = 503
# More text than the policy's `max_scan_chars` (and the overflow policy refuses it).
STATUS_SCAN_LIMIT = 413


@dataclass(frozen=True, slots=True)
class Violation:
    guardrail: GuardrailName
    stage: Stage
    # pii_detected | toxicity_detected | prompt_injection_detected | guardrail_unavailable | guardrail_scan_limit
    code: str
    message: str
    status: int = STATUS_CONTENT
    # Entity types or categories involved (never values).
    kinds: tuple[str, ...] = ()


@dataclass(slots=True)
class GuardrailResult:
    name: GuardrailName
    stage: Stage
    action: Action
    entity_counts: dict[str, int] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    latency_ms: float = 0.0
    error: str | None = None
    # Why the guardrail did not (fully) run: "timeout", "busy" (the tenant's in-flight
    # cap), "failed" (it raised), "oversize" (over max_scan_chars, not scanned) or
    # "prefix" (over max_scan_chars, only the first max_scan_chars scanned).
    reason: str | None = None

    @property
    def label(self) -> str:
        """The action for metrics and request rows. Reasons that come from a limit are
        appended (``error.busy``, ``block.oversize``, ``mask.prefix``): a 413 for size is
        not a PII block, and a scan that stopped at the limit is not a full one. A
        timeout or an exception stays plain ``error``, as it always was."""
        return f"{self.action}.{self.reason}" if self.reason in _LIMIT_REASONS else self.action


_LIMIT_REASONS = frozenset({"busy", "oversize", "prefix"})


@dataclass(slots=True)
class InputOutcome:
    violation: Violation | None = None
    # Rewritten texts, same length and order as the input; None when nothing changed.
    texts: list[str] | None = None
    # Set when mask placeholders were sent upstream and must be restored in the answer.
    restorer: Restorer | None = None
    results: list[GuardrailResult] = field(default_factory=list)


@dataclass(slots=True)
class OutputOutcome:
    text: str
    violation: Violation | None = None
    results: list[GuardrailResult] = field(default_factory=list)
    # True when the text differs from the provider's answer by more than restoration
    # (redacted): the cache must not store it.
    modified: bool = False


@dataclass(frozen=True, slots=True)
class ScanStep:
    emit: str
    violation: Violation | None = None


def summarize(results: list[GuardrailResult]) -> str:
    """Value for the `x-sluice-guardrails` header, e.g. ``pii=mask;injection=pass``.

    One entry per guardrail and stage; the strongest action wins when a guardrail ran
    several times (a stream scanned in windows).
    """
    rank = {"pass": 0, "flag": 1, "mask": 2, "redact": 3, "error": 4, "block": 5}
    merged: dict[str, str] = {}
    for r in results:
        key = r.name if r.stage == "input" else f"{r.name}.output"
        current = merged.get(key)
        if current is None or rank[r.action] > rank[current]:
            merged[key] = r.action
    return ";".join(f"{k}={v}" for k, v in merged.items())
