"""Step 3 of the pipeline: rate limits and budgets, per key and per tenant.

    admit(ctx, route, body)   after auth and validation: estimate, then one reserve call;
                              a refusal raises (429 / 503) with the headers set
    settle(ctx)               after the answer (streams included): the actual usage
                              replaces the estimate, queued, never awaited

A request is counted against its key (config `keys[].limits/budget` or a virtual key's
record) and its tenant (`limits.tenants`, or an operator's record through the admin
API); it passes only if both admit it. Requests of a key and tenant without limits skip
all of it, so a gateway without limits pays nothing here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gateway.quota.audit import AuditLog
from gateway.quota.directory import KeyDirectory, TenantDirectory, redis_client
from gateway.quota.errors import BudgetExceeded, QuotaUnavailable, RateLimited
from gateway.quota.estimate import Estimator
from gateway.quota.headers import duration, instant, rate_headers, retry_headers
from gateway.quota.limiter import Limiter, LimiterUnavailable
from gateway.quota.local_limiter import LocalLimiter
from gateway.quota.metrics import QuotaMetrics
from gateway.quota.model import (
    BUDGET,
    CONCURRENCY,
    LIMITED,
    NANO,
    REQUESTS,
    TOKENS,
    Decision,
    QuotaSpec,
    Reservation,
    Subject,
    SubjectSet,
    period_bounds,
)
from gateway.quota.records import iso
from gateway.quota.redis_limiter import RedisLimiter

if TYPE_CHECKING:
    from gateway.auth import Principal
    from gateway.config import SluiceConfig
    from gateway.context import RequestContext
    from gateway.routing import ModelRoute
    from telemetry import Telemetry

log = logging.getLogger("sluice.quota")
_SETS_MAX = 10_000


def _redacted(url: str) -> str:
    from telemetry.clickhouse import redact_url
    return redact_url(url)


class QuotaService:
    def __init__(self, cfg: SluiceConfig, telemetry: Telemetry, output_caps: Mapping[str, int]) -> None:
        lc = cfg.limits
        self.config = lc
        self.redis_url = lc.redis_url or cfg.cache.redis_url
        self.admin_enabled = cfg.admin.master_key is not None
        self.metrics = QuotaMetrics(telemetry.metrics.registry, lc.metrics_max_keys)
        self.estimator = Estimator(telemetry, lc.default_max_tokens, output_caps)
        self.audit = AuditLog(telemetry)
        if self.redis_url:
            limiter: Limiter = RedisLimiter(
                self.redis_url, _redacted(self.redis_url), prefix=lc.key_prefix, window_s=lc.window_s,
                lease_s=lc.lease_s, timeout_s=lc.timeout_s, retry_after_s=lc.retry_after_s,
                settle_interval_s=lc.settle_interval_s, on_settle_dropped=self.metrics.settlements_dropped.inc)
            limiter.client.on_down = self._redis_down
            limiter.client.on_up = self._redis_up
        else:
            limiter = LocalLimiter(window_s=lc.window_s, lease_s=lc.lease_s)
        self.limiter = limiter
        self.redis = redis_client(self.redis_url, lc.timeout_s) if self.redis_url else None
        dynamic = self.redis is not None and self.admin_enabled
        self.keys = KeyDirectory(self.redis, lc.key_prefix, lc.key_cache_s) if dynamic else None
        self.tenants = TenantDirectory(lc.tenants, self.redis if dynamic else None, lc.key_prefix, lc.key_cache_s)
        config_limits = any(k.limits is not None or k.budget is not None for k in cfg.keys or ())
        # Whether the step runs at all: something may be limited now or later (the admin API).
        self.active = config_limits or any(QuotaSpec.build(t.limits, t.budget) for t in lc.tenants.values()) \
            or self.admin_enabled
        self._sets: dict[tuple, SubjectSet] = {}
        self._last_set: tuple = (None, None, None)      # (principal, tenant spec, their SubjectSet)
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.active:
            await self.limiter.start()
            fail = self.config.fail
            if self.limiter.shared:
                log.info("limits: shared by every replica through Redis at %s (one atomic script call per "
                         "request); while Redis does not answer, rate limits fail %s and budgets fail %s",
                         self.limiter.description, fail.rate, fail.budget)
            else:
                log.warning("limits: no limits.redis_url (nor cache.redis_url): limits and budgets are counted "
                            "in this process only. Exact for one replica; with more replicas or --workers, each "
                            "process counts on its own")
        if self.keys is not None:
            await self.keys.refresh_has_keys()
        if self.admin_enabled and self.redis is None:
            log.warning("admin: no Redis (limits.redis_url): the admin API shows keys from sluice.yaml, but "
                        "cannot create virtual keys or store tenant limits")

    async def aclose(self) -> None:
        await self.audit.aclose()
        await self.limiter.aclose()
        if self.redis is not None:
            await self.redis.aclose()

    def _redis_down(self, reason: str) -> None:
        fail = self.config.fail
        log.error("limits: Redis (%s) stopped answering (%s): rate limits fail %s, budgets fail %s until it "
                  "answers again", self.limiter.description, reason, fail.rate, fail.budget)
        self.metrics.redis_up.set(0)

    def _redis_up(self) -> None:
        log.warning("limits: Redis (%s) answers again; limits are shared and enforced", self.limiter.description)
        self.metrics.redis_up.set(1)

    # -- the request path ----------------------------------------------------------------

    async def admit(self, ctx: RequestContext, route: ModelRoute, body: Mapping[str, Any]) -> None:
        p = ctx.principal
        tenants = self.tenants
        tenant_spec = await tenants.spec(p.tenant) if tenants.dynamic else tenants.configured(p.tenant)
        key_spec = p.limits
        if key_spec is None and tenant_spec is None:
            return
        last = self._last_set                   # most requests come from the key before them
        if last[0] is p and last[1] is tenant_spec:
            subjects = last[2]
        else:
            subjects = self.subject_set(p, key_spec, tenant_spec)
            self._last_set = (p, tenant_spec, subjects)
        estimate = self.estimator.estimate(ctx, route, body)
        try:
            decision = await self.limiter.reserve(subjects, ctx.request_id, estimate)
        except LimiterUnavailable:
            self._unavailable(ctx, subjects)
            return
        values = decision.values
        if subjects.headers_wanted:
            ctx.extra_headers = rate_headers(decision, subjects, ctx.endpoint.api_format)
        if subjects.budget:
            budget_seen = self.metrics.budget_seen
            for offset, subject in subjects.budget_at:
                budget_seen(subject, values, offset)
        if values[0] == 1:                      # admitted
            ctx.reservation = Reservation(subjects, ctx.request_id, values[4], estimate)
            self.metrics.admitted += 1
            return
        raise self._refusal(ctx, decision, subjects, estimate.tokens)

    def settle(self, ctx: RequestContext) -> None:
        """After the answer (or its end, for a stream): what was used replaces the estimate."""
        reservation = ctx.reservation
        if reservation is None:
            return
        ctx.reservation = None
        tokens, nano = self.estimator.actual(ctx, reservation.estimate, reservation.subjects.budget)
        self.limiter.settle(reservation, tokens, nano)

    def subject_set(self, p: Principal, key_spec: QuotaSpec | None, tenant_spec: QuotaSpec | None) -> SubjectSet:
        memo = (p.quota_id, p.tenant, key_spec, tenant_spec)
        found = self._sets.get(memo)
        if found is None:
            subjects = []
            if key_spec is not None:
                subjects.append(Subject("key", p.quota_id or p.key_id, p.tenant, p.key_id, key_spec))
            if tenant_spec is not None:
                subjects.append(Subject("tenant", p.tenant, p.tenant, p.tenant, tenant_spec))
            if len(self._sets) >= _SETS_MAX:
                self._sets.clear()
            found = self._sets[memo] = SubjectSet(tuple(subjects))
        return found

    # -- the admin API and reports ------------------------------------------------------

    async def usage(self, kind: str, p: Principal, spec: QuotaSpec | None) -> dict[str, Any]:
        """A key's or tenant's counters now: `usage` this window and in flight, `spend_usd`
        this budget period (settled; `reserved_usd` by requests in flight), `period_start`."""
        window_s = self.config.window_s
        if spec is None:
            return {"usage": None, "spend_usd": None, "period_start": None,
                    "note": "nothing is counted for a key or tenant without limits or a budget"}
        subject = Subject(kind, (p.quota_id or p.key_id) if kind == "key" else p.tenant, p.tenant,
                          p.key_id if kind == "key" else p.tenant, spec)
        try:
            now_ms, (state,) = await self.limiter.peek(SubjectSet((subject,)))
        except LimiterUnavailable as exc:
            return {"usage": None, "spend_usd": None, "period_start": None, "error": f"limiter unavailable: {exc}"}
        _, start, end = period_bounds(spec.period, now_ms / 1000)
        spent, reserved = state.spent_nano / NANO, state.reserved_nano / NANO
        out: dict[str, Any] = {
            "usage": {"window_s": window_s, "requests": state.requests, "tokens": state.tokens,
                      "in_flight": state.in_flight},
            "spend_usd": round(spent, 9), "reserved_usd": round(reserved, 9),
            "period_start": iso(start) if spec.period in ("day", "month") else None,
            "period_end": iso(end) if spec.period in ("day", "month") else None,
        }
        if spec.budget_usd:
            out["budget_remaining_usd"] = round(max(spec.budget_usd - spent - reserved, 0.0), 9)
        return out

    def budget_report(self, by: str, config_keys: list[Principal]) -> str:
        """The budgets section of `sluice report --by key|tenant` (blocking: runs the
        look-ups on the gateway's event loop from the report's thread)."""
        if self._loop is None:
            return ""
        future = asyncio.run_coroutine_threadsafe(self._budget_rows(by, config_keys), self._loop)
        try:
            rows = future.result(10.0)
        except Exception as exc:
            return f"\nBudgets: unavailable ({type(exc).__name__}: {exc})\n"
        if not rows:
            return ""
        header = [by, "tenant", "period", "budget $", "spent $", "reserved $", "remaining $", "period start"]
        lines = [header, *rows]
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        text = ["", "Budgets now (from the limiter; spent = settled this period)"]
        for n, line in enumerate(lines):
            text.append("  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))))
            if n == 0:
                text.append("-" * len(text[-1]))
        return "\n".join(text) + "\n"

    async def _budget_rows(self, by: str, config_keys: list[Principal]) -> list[list[str]]:
        from gateway.auth import Principal as _P
        from gateway.quota.directory import principal_of
        subjects: list[tuple[str, Principal, QuotaSpec]] = []
        if by == "key":
            subjects += [("key", p, p.limits) for p in config_keys if p.limits and p.limits.budget_usd]
            if self.keys is not None:
                for record in await self.keys.all():
                    p = principal_of(record)
                    if p.limits and p.limits.budget_usd and record.revoked_at is None:
                        subjects.append(("key", p, p.limits))
        else:
            names = await self.tenants.names() if self.tenants.dynamic else self.tenants.config_names
            for name in names:
                spec = await self.tenants.spec(name)
                if spec is not None and spec.budget_usd:
                    subjects.append(("tenant", _P(name, "", None), spec))
        rows = []
        for kind, p, spec in subjects:
            u = await self.usage(kind, p, spec)
            if u.get("spend_usd") is None:
                rows.append([p.key_id if kind == "key" else p.tenant, p.tenant, spec.period,
                             f"{spec.budget_usd:.2f}", "?", "?", "?", "-"])
                continue
            rows.append([p.key_id if kind == "key" else p.tenant, p.tenant, spec.period, f"{spec.budget_usd:.2f}",
                         f"{u['spend_usd']:.4f}", f"{u['reserved_usd']:.4f}", f"{u['budget_remaining_usd']:.4f}",
                         u["period_start"] or "-"])
        return rows

    def _unavailable(self, ctx: RequestContext, subjects: SubjectSet) -> None:
        fail = self.config.fail
        closed = (subjects.budget and fail.budget == "closed") or (subjects.rates and fail.rate == "closed")
        self.metrics.redis_errors.labels("closed" if closed else "open").inc()
        self.metrics.decision("fail_closed" if closed else "fail_open")
        if closed:
            raise QuotaUnavailable("Limits and budgets cannot be checked right now; retry shortly",
                                   headers={"retry-after": "1"})

    def _refusal(self, ctx: RequestContext, d: Decision, subjects: SubjectSet, tokens: int) -> Exception:
        s = subjects.subjects[d.subject]
        spec, state = s.spec, d.states[d.subject]
        who = f"{'key' if s.kind == 'key' else 'tenant'} '{s.label}'"
        ctx.limited = LIMITED[d.kind]
        self.metrics.decision(ctx.limited, s.kind)
        headers = retry_headers(d.retry_ms) if d.retry_ms > 0 else {}
        if d.kind == BUDGET:
            if spec.period == "total":
                reset = "it does not reset"
            else:
                reset = f"it resets at {instant(d.now_ms, d.retry_ms)}"
            spent = (state.spent_nano + state.reserved_nano) / NANO
            headers["x-should-retry"] = "false"
            return BudgetExceeded(
                f"Budget exceeded for {who}: ${spec.budget_usd:.2f} per {spec.period} "
                f"(${spent:.4f} spent or reserved by requests in flight); {reset}", headers=headers)
        if d.kind == REQUESTS:
            return RateLimited(f"Rate limit reached for {who}: {spec.rpm} requests per "
                               f"{_window(self.config.window_s)}; retry in {duration(d.retry_ms)}", headers=headers)
        if d.kind == TOKENS:
            return RateLimited(f"Rate limit reached for {who}: {spec.tpm} tokens per {_window(self.config.window_s)} "
                               f"(this request reserves {tokens}); "
                               f"retry in {duration(d.retry_ms)}", tokens=True, headers=headers)
        if d.kind == CONCURRENCY:
            return RateLimited(f"Concurrency limit reached for {who}: {spec.max_parallel} requests in flight",
                               concurrency=True, headers=headers)
        return RateLimited(f"Request too large for {who}: it may use more than the {spec.tpm} tokens per "
                           f"{_window(self.config.window_s)} allowed (lower max_tokens)", tokens=True,
                           headers={"x-should-retry": "false"})


def _window(seconds: float) -> str:
    return "minute" if seconds == 60 else f"{seconds:g} s"
