"""The plain values the limiters work with: what a subject may do (`QuotaSpec`), who is
counted (`Subject`), what a request asks (`Estimate`), what the limiter answered
(`Decision`) and what must be settled later (`Reservation`).

Money is counted in integer nano-dollars (1e-9 USD) everywhere state is kept, so Redis
can add it with HINCRBY and no float rounding piles up; a Lua number holds such integers
exactly up to 9 million USD.
"""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.quota.config import Budget, RateLimits

NANO = 1_000_000_000
PERIOD_CODES = {"": 0, "day": 1, "month": 2, "total": 3}

# Why a request was refused; the value is the `limited` column of llm_requests.
ADMITTED, REQUESTS, TOKENS, CONCURRENCY, BUDGET, TOO_LARGE = range(6)
LIMITED = {REQUESTS: "rate", TOKENS: "rate", TOO_LARGE: "rate", CONCURRENCY: "concurrency", BUDGET: "budget"}


@dataclass(frozen=True, slots=True)
class QuotaSpec:
    """Limits and budget of one key or tenant; 0 means no limit of that kind."""

    rpm: int = 0
    tpm: int = 0
    max_parallel: int = 0
    budget_usd: float = 0.0
    period: str = ""                 # "" (no budget), day, month, total

    @classmethod
    def build(cls, limits: RateLimits | None, budget: Budget | None) -> QuotaSpec | None:
        """The spec of config/record fields; None when nothing is limited."""
        spec = cls(rpm=(limits.rpm or 0) if limits else 0, tpm=(limits.tpm or 0) if limits else 0,
                   max_parallel=(limits.max_parallel or 0) if limits else 0,
                   budget_usd=budget.usd if budget else 0.0, period=budget.period if budget else "")
        return spec if spec.active else None

    @property
    def active(self) -> bool:
        return bool(self.rpm or self.tpm or self.max_parallel or self.budget_usd)

    @property
    def budget_nano(self) -> int:
        return round(self.budget_usd * NANO)

    @property
    def period_code(self) -> int:
        return PERIOD_CODES[self.period]

    @property
    def rates(self) -> bool:
        return bool(self.rpm or self.tpm or self.max_parallel)

    def args(self) -> str:
        """The spec as the reserve script reads it."""
        return f"{self.rpm},{self.tpm},{self.max_parallel},{self.budget_nano},{self.period_code}"

    def as_json(self) -> dict:
        limits = {"rpm": self.rpm or None, "tpm": self.tpm or None, "max_parallel": self.max_parallel or None}
        budget = {"usd": self.budget_usd, "period": self.period} if self.budget_usd else None
        return {"limits": limits, "budget": budget}


@dataclass(frozen=True, slots=True)
class Subject:
    """One counted party: a key (`kind` "key", `ident` its quota id) or a tenant."""

    kind: str                        # "key" | "tenant"
    ident: str                       # the key's quota id, or the tenant name
    tenant: str
    label: str                       # shown in messages and metrics: the key's name, the tenant
    spec: QuotaSpec


class Estimate:
    """What a request is expected to use: reserved up front, settled to the actual.
    (A plain slotted class: a frozen dataclass costs ~1 µs to build, per request.)"""

    __slots__ = ("prompt_tokens", "output_tokens", "nano_usd", "tokens")

    def __init__(self, prompt_tokens: int, output_tokens: int, nano_usd: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.nano_usd = nano_usd
        self.tokens = prompt_tokens + output_tokens

    def __repr__(self) -> str:
        return f"Estimate({self.prompt_tokens}, {self.output_tokens}, {self.nano_usd})"


@dataclass(slots=True)
class SubjectState:
    """One subject as the limiter saw it at the decision (after admitting, if it did)."""

    requests: int = 0                # in the window
    requests_reset_ms: int = 0       # until `requests` next goes down (the oldest leaves the window)
    tokens: int = 0
    tokens_reset_ms: int = 0
    in_flight: int = 0
    spent_nano: int = 0              # settled spend this period
    reserved_nano: int = 0           # reserved by requests in flight
    period_end_ms: int = 0           # epoch ms; 0 for no period or `total`


class Decision:
    """The limiter's answer, kept as the script's flat list of integers (parsed once,
    read by index on the hot path; `states` builds objects for the admin API and tests):

        [admitted, kind, subject + 1, retry_ms, now_ms] + per subject [requests,
        requests_reset_ms, tokens, tokens_reset_ms, in_flight, spent_nano, reserved_nano,
        period_end_ms]
    """

    __slots__ = ("values", "nsub")
    WIDTH = 8

    def __init__(self, values: list[int], nsub: int) -> None:
        self.values = values
        self.nsub = nsub

    @property
    def admitted(self) -> bool:
        return self.values[0] == 1

    @property
    def kind(self) -> int:
        return self.values[1]

    @property
    def subject(self) -> int:
        """Index of the refusing subject."""
        return max(self.values[2] - 1, 0)

    @property
    def retry_ms(self) -> int:
        return self.values[3]

    @property
    def now_ms(self) -> int:
        return self.values[4]

    def at(self, subject: int, field: int) -> int:
        return self.values[5 + self.WIDTH * subject + field]

    @property
    def states(self) -> list[SubjectState]:
        v, w = self.values, self.WIDTH
        return [SubjectState(*v[5 + w * i:5 + w * (i + 1)]) for i in range(self.nsub)]


# Positions within a subject's part of Decision.values.
REQ, REQ_RESET, TOK, TOK_RESET, IN_FLIGHT, SPENT, RESERVED, PERIOD_END = range(8)


@dataclass(slots=True)
class Reservation:
    """An admitted request's claim, settled once its answer is known."""

    subjects: SubjectSet
    request_id: str
    at_ms: int                       # the limiter's clock at admission (the rate log's score)
    estimate: Estimate


class SubjectSet:
    """The subjects one request is counted against (key first, then tenant), with what
    the limiters need precomputed: built once per (key, tenant, specs) and reused."""

    __slots__ = ("subjects", "args", "headers_wanted", "budget", "rates", "cache", "rpm_at", "tpm_at",
                 "budget_at")

    def __init__(self, subjects: tuple[Subject, ...]):
        self.subjects = subjects
        self.args = ",".join(s.spec.args() for s in subjects)
        self.headers_wanted = any(s.spec.rpm or s.spec.tpm for s in subjects)
        self.budget = any(s.spec.budget_usd for s in subjects)
        self.rates = any(s.spec.rates for s in subjects)
        self.cache: object = None    # a limiter's own precomputed form (the Redis command head)
        # (position of the subject's part in Decision.values, its limit, as header digits)
        w = Decision.WIDTH
        self.rpm_at = tuple((5 + w * i, s.spec.rpm, b"%d" % s.spec.rpm) for i, s in enumerate(subjects) if s.spec.rpm)
        self.tpm_at = tuple((5 + w * i, s.spec.tpm, b"%d" % s.spec.tpm) for i, s in enumerate(subjects) if s.spec.tpm)
        self.budget_at = tuple((5 + w * i, s) for i, s in enumerate(subjects) if s.spec.budget_usd)


def period_bounds(period: str, now_s: float | None = None) -> tuple[str, float, float]:
    """(period id, start, end) in epoch seconds for a budget period at `now_s` (UTC);
    `total` and "" have one period, from 0 to 0 (no end). Same ids as the Lua script."""
    now_s = time.time() if now_s is None else now_s
    if period == "day":
        day = int(now_s // 86400)
        return f"d{day}", day * 86400.0, (day + 1) * 86400.0
    if period == "month":
        t = time.gmtime(now_s)
        start = calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0))
        ny, nm = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
        return f"m{t.tm_year}-{t.tm_mon}", float(start), float(calendar.timegm((ny, nm, 1, 0, 0, 0)))
    if period == "total":
        return "t", 0.0, 0.0
    return "", 0.0, 0.0
