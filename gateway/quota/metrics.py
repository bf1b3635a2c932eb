"""The limits' metrics, registered on the gateway's own registry (`GET /metrics`).

Label sets are bounded: `scope` is key or tenant, `decision` a fixed set, `subject` a
tenant (configured or created by an operator) or one of at most `limits.metrics_max_keys`
keys that have a budget (later keys are not exported; a key appears by its non-secret id).

The request path only stores numbers: the decision counts are plain integers and each
budget subject's latest figures one list reference, read when /metrics is scraped (the
client library's set()/inc() take a lock each, ~0.5 µs, four of them per request).
Budget gauges are the figures of the last decision this process made for the subject:
with Redis that is the shared spend, at most one request old on a busy key.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from gateway.quota.model import NANO, RESERVED, SPENT, Subject


class _Families:
    """A registry collector yielding the counts and budget figures as of the scrape."""

    def __init__(self, owner: QuotaMetrics) -> None:
        self._owner = owner

    def describe(self) -> list:
        return []

    def collect(self) -> Iterator:
        o = self._owner
        decisions = CounterMetricFamily(
            "sluice_limit_decisions", "Requests checked against limits, by outcome (admitted, rate, budget, "
            "concurrency, fail_open, fail_closed) and the scope that decided (key, tenant; '-' for none).",
            labels=("decision", "scope"))
        counts = dict(o.counts)
        if o.admitted:
            counts[("admitted", "-")] = counts.get(("admitted", "-"), 0) + o.admitted
        for (decision, scope), n in counts.items():
            decisions.add_metric((decision, scope), n)
        yield decisions
        families = {name: GaugeMetricFamily(name, text, labels=("scope", "subject", "period")) for name, text in (
            ("sluice_budget_usd", "Budget of a key or tenant for its period."),
            ("sluice_budget_spent_usd", "Settled spend of a key or tenant this period."),
            ("sluice_budget_reserved_usd", "Spend reserved by requests in flight."),
            ("sluice_budget_remaining_usd", "Budget left this period (budget - spent - reserved, not below 0)."))}
        for (subject, values, offset) in list(o.budgets.values()):
            labels = (subject.kind, subject.label, subject.spec.period)
            spent, reserved = values[offset + SPENT], values[offset + RESERVED]
            budget = subject.spec.budget_nano
            families["sluice_budget_usd"].add_metric(labels, subject.spec.budget_usd)
            families["sluice_budget_spent_usd"].add_metric(labels, spent / NANO)
            families["sluice_budget_reserved_usd"].add_metric(labels, reserved / NANO)
            families["sluice_budget_remaining_usd"].add_metric(labels, max(budget - spent - reserved, 0) / NANO)
        yield from families.values()


class QuotaMetrics:
    def __init__(self, registry: CollectorRegistry, max_keys: int) -> None:
        r = registry
        self.redis_errors = Counter(
            "sluice_limits_redis_errors", "Limit checks Redis did not answer, by the fail mode applied.",
            ("fail",), registry=r)
        self.redis_up = Gauge(
            "sluice_limits_redis_up", "1 while the limits' Redis answers (1 with the in-process limiter).",
            registry=r)
        self.settlements_dropped = Counter(
            "sluice_limits_settlements_dropped", "Settlements not delivered (Redis down): the reservation "
            "stays until its lease ends and then counts as spent.", registry=r)
        self.redis_up.set(1)
        self.counts: dict[tuple[str, str], int] = {}
        self.admitted = 0                    # the common decision, a plain attribute: one add per request
        # (kind, ident, period) -> (subject, the latest Decision.values, its offset)
        self.budgets: dict[tuple[str, str, str], tuple[Subject, list[int], int]] = {}
        self._max_keys = max_keys
        self._keys = 0
        r.register(_Families(self))

    def decision(self, decision: str, scope: str = "-") -> None:
        key = (decision, scope)
        self.counts[key] = self.counts.get(key, 0) + 1

    def budget_seen(self, subject: Subject, values: list[int], offset: int) -> None:
        key = (subject.kind, subject.ident, subject.spec.period)
        if key in self.budgets:
            self.budgets[key] = (subject, values, offset)
            return
        if subject.kind == "key":
            if self._keys >= self._max_keys:
                return
            self._keys += 1
        self.budgets[key] = (subject, values, offset)
