"""The limiter without Redis: the reserve script's rules (scripts.py), in this process.

Exact for one replica (one process). With several replicas or `--workers N` each process
counts on its own, so a key may get N times its limits: the start-up log says so. State
is kept per subject (bounded by the keys and tenants that have limits, which config and
the admin API define); a subject's window is at most 61 buckets.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from gateway.quota.model import (
    BUDGET,
    CONCURRENCY,
    REQUESTS,
    TOKENS,
    TOO_LARGE,
    Decision,
    Estimate,
    Reservation,
    Subject,
    SubjectSet,
    SubjectState,
    period_bounds,
)


@dataclass(slots=True)
class _Counters:
    buckets: dict = field(default_factory=dict)    # bucket -> [requests, tokens], oldest first
    n: int = 0
    tokens: int = 0
    leases: dict = field(default_factory=dict)     # request_id -> (lease end ms, reserved nano)
    reserved: int = 0
    period: str | None = None                      # the period's id (model.period_bounds)
    period_kind: str = ""                          # day, month, total, ""
    period_end: float = 0.0                        # epoch s; recomputed when passed
    spent: int = 0


def _now_ms() -> int:
    return int(time.time() * 1000)


class LocalLimiter:
    shared = False
    description = "in-process"

    def __init__(self, *, window_s: float, lease_s: float) -> None:
        self._window_ms = round(window_s * 1000)
        self._bucket = max(1, self._window_ms // 60)
        self._lease_ms = round(lease_s * 1000)
        self._state: dict[tuple[str, str, str], _Counters] = {}

    async def start(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    def _counters(self, s: Subject) -> _Counters:
        key = (s.kind, s.ident, s.tenant)
        c = self._state.get(key)
        if c is None:
            c = self._state[key] = _Counters()
        return c

    def _refresh(self, c: _Counters, period: str, now: int) -> None:
        lo = now // self._bucket - 60
        buckets = c.buckets
        while buckets:
            oldest = next(iter(buckets))
            if oldest >= lo:
                break
            n, tokens = buckets.pop(oldest)
            c.n -= n
            c.tokens -= tokens
        if c.period is None or c.period_kind != period or (c.period_end and now / 1000 >= c.period_end):
            pid, _, end = period_bounds(period, now / 1000)
            if c.period != pid:
                c.spent = 0
            c.period, c.period_kind, c.period_end = pid, period, end
        leases = c.leases
        while leases:                        # admission order is lease-end order: the oldest first
            rid = next(iter(leases))
            end, held = leases[rid]
            if end > now:
                break
            del leases[rid]
            c.reserved -= held
            c.spent += held                  # never settled: its reservation is spent

    def _reset_ms(self, c: _Counters, now: int) -> int:
        if not c.buckets:
            return 0
        return (next(iter(c.buckets)) + 61) * self._bucket - now

    async def reserve(self, subjects: SubjectSet, request_id: str, estimate: Estimate) -> Decision:
        now = _now_ms()
        bucket = self._bucket
        est_tok, est_nano = estimate.tokens, estimate.nano_usd
        kind = who = retry = 0
        counters = []
        for i, s in enumerate(subjects.subjects, 1):
            spec = s.spec
            c = self._counters(s)
            self._refresh(c, spec.period, now)
            counters.append(c)
            budget = spec.budget_nano
            k = r = 0
            if budget and (c.spent + c.reserved >= budget or c.spent + c.reserved + est_nano > budget):
                k = BUDGET
                r = int(c.period_end * 1000) - now if c.period_end else 0
            elif spec.rpm and c.n + 1 > spec.rpm:
                k, r = REQUESTS, self._reset_ms(c, now)
            elif spec.tpm and est_tok > spec.tpm:
                k = TOO_LARGE
            elif spec.tpm and c.tokens + est_tok > spec.tpm:
                need, freed, r = c.tokens + est_tok - spec.tpm, 0, (now // bucket + 61) * bucket - now
                for b, (_, tokens) in c.buckets.items():
                    freed += tokens
                    if freed >= need:
                        r = (b + 61) * bucket - now
                        break
                k = TOKENS
            elif spec.max_parallel and len(c.leases) + 1 > spec.max_parallel:
                k, r = CONCURRENCY, 1000
            if k and not kind:
                kind, who, retry = k, i, r
        if not kind:
            cur = now // bucket
            for s, c in zip(subjects.subjects, counters):
                counts = c.buckets.get(cur)
                if counts is None:
                    c.buckets[cur] = [1, est_tok]
                else:
                    counts[0] += 1
                    counts[1] += est_tok
                c.n += 1
                c.tokens += est_tok
                if s.spec.max_parallel or s.spec.budget_usd:
                    c.leases[request_id] = (now + self._lease_ms, est_nano)
                    c.reserved += est_nano
        values = [0 if kind else 1, kind, who, retry, now]
        for i, c in enumerate(counters, 1):
            reset = self._reset_ms(c, now)
            values += [c.n, reset, c.tokens, retry if kind == TOKENS and who == i else reset,
                       len(c.leases), c.spent, c.reserved, int(c.period_end * 1000)]
        return Decision(values, len(counters))

    def settle(self, reservation: Reservation, tokens: int, nano_usd: int) -> None:
        now = _now_ms()
        est = reservation.estimate
        b = reservation.at_ms // self._bucket
        for s in reservation.subjects.subjects:
            c = self._counters(s)
            if c.period_end and now >= c.period_end * 1000:
                self._refresh(c, s.spec.period, now)     # a new budget period: its spend starts at 0
            leased = s.spec.max_parallel or s.spec.budget_usd
            lease = c.leases.pop(reservation.request_id, None) if leased else None
            if not leased:
                c.spent += nano_usd
            elif lease is not None:
                c.reserved -= lease[1]
                c.spent += nano_usd
            else:
                c.spent += max(0, nano_usd - est.nano_usd)
            counts = c.buckets.get(b)
            if counts is not None and tokens != est.tokens:
                counts[1] += tokens - est.tokens
                c.tokens += tokens - est.tokens

    async def peek(self, subjects: SubjectSet) -> tuple[int, list[SubjectState]]:
        now = _now_ms()
        states = []
        for s in subjects.subjects:
            c = self._counters(s)
            self._refresh(c, s.spec.period, now)
            reset = self._reset_ms(c, now)
            states.append(SubjectState(c.n, reset, c.tokens, reset, len(c.leases), c.spent, c.reserved,
                                       int(c.period_end * 1000)))
        return now, states
