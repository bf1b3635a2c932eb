"""`Evaluators`: every configured evaluator, once per monitor run.

    evaluators = Evaluators(monitoring_cfg, embedder=..., tracer=...)   # models load lazily, once
    outcome = evaluators.run(client, database)                           # blocking
    evaluators.close()

For each enabled evaluator in turn (assertions, grounding, self-consistency, judge: cheapest
first): how many rows it may still write this minute and what it may still spend today
(sampling.py, read back from `evaluations`); its pending sample of `llm_requests`; then per
request one span `sluice.evaluate` **linked** to the evaluated request's span (a link, not a
parent: the evaluation happens minutes later, in another trace; calls the evaluation makes
to the gateway carry this span's traceparent), the evaluation, and one row. Each
evaluator's rows are inserted when it is done, so the next one's caps and a concurrent
run's anti-join see them. An evaluator that fails is logged and counted; the others run.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from monitoring.evaluators.assertions import AssertionChecker, assertion_sql, sql_check_names
from monitoring.evaluators.config import EvaluatorsConfig, evaluator_id
from monitoring.evaluators.context import extract_grounding, parse_messages
from monitoring.evaluators.sampling import Candidate, pending, spent_today, written_last_minute
from telemetry.evaluations import EVALUATION_COLUMNS, EVALUATIONS, EvaluationRow

log = logging.getLogger("sluice.monitoring")

Scored = tuple[float | None, str, dict[str, Any], float]    # score, label, details, cost_usd
Evaluate = Callable[[Candidate, dict[str, str]], Scored | None]   # None: not applicable, no row


@dataclass(slots=True)
class EvaluatorOutcome:
    evaluator: str
    evaluator_id: str
    candidates: int = 0
    written: int = 0
    errors: int = 0
    cost_usd: float = 0.0
    rate_capped: bool = False       # max_per_minute reached (requests left for a later run)
    budget_capped: bool = False     # daily_budget_usd reached


@dataclass(slots=True)
class EvaluationRun:
    now: datetime
    outcomes: list[EvaluatorOutcome] = field(default_factory=list)
    rows: list[EvaluationRow] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(slots=True)
class _Spec:
    name: str
    evaluator_id: str
    sample: Any
    max_per_minute: int
    budget_usd: float | None
    evaluate: Evaluate
    extra_where: str = ""
    extra_parameters: dict = field(default_factory=dict)
    extra_columns: tuple[str, ...] = ()


class Evaluators:
    def __init__(self, monitoring_cfg: Any, *, embedder: Any = None, tracer: Any = None,
                 transport: Any = None) -> None:
        """`monitoring_cfg`: a MonitoringConfig. `embedder`: the cache's LocalEmbedder (the
        grounding default and self-consistency's embedding backend); `tracer`: an
        OpenTelemetry tracer for the evaluation spans (None: no spans); `transport`: httpx
        transport of the gateway calls (tests)."""
        self.cfg: EvaluatorsConfig = monitoring_cfg.evaluators
        key = monitoring_cfg.evaluator_key
        self._key = key.get_secret_value() if key is not None else None
        self._embedder = embedder
        self._tracer = tracer
        self._transport = transport
        self._grounding: Any = None
        self._agreement: Any = None
        self._models: Any = None
        self._checkers: dict[str, AssertionChecker] = {}

    # -- lazily loaded parts -----------------------------------------------------------------

    def _gateway(self) -> Any:
        if self._models is None:
            from monitoring.evaluators.gateway_client import GatewayModels
            if self._key is None:
                log.warning("monitor: evaluators call the gateway without monitoring.evaluator_key: their calls "
                            "count as user traffic")
            self._models = GatewayModels(self.cfg.resolved_gateway_url, self._key, prices=self.cfg.prices,
                                         timeout_s=max(self.cfg.consistency.timeout_s, self.cfg.judge.timeout_s),
                                         transport=self._transport)
        return self._models

    def _grounding_backend(self) -> Any:
        if self._grounding is None:
            g = self.cfg.grounding
            if g.backend == "nli":
                from monitoring.evaluators.nli import NliGrounding, load_cross_encoder
                self._grounding = NliGrounding(load_cross_encoder(
                    g.model or "", runtime=g.runtime, entailment_label=g.entailment_label,
                    trust_remote_code=g.trust_remote_code))
            else:
                from monitoring.evaluators.grounding import EmbeddingGrounding
                self._grounding = EmbeddingGrounding(self._embedder)
        return self._grounding

    def _consistency_agreement(self) -> Any:
        if self._agreement is None:
            from monitoring.evaluators.consistency import SentenceAgreement
            c = self.cfg.consistency
            if c.backend == "nli":
                from monitoring.evaluators.nli import load_cross_encoder
                self._agreement = SentenceAgreement(encoder=load_cross_encoder(
                    c.model or "", runtime=c.runtime, entailment_label=c.entailment_label,
                    trust_remote_code=c.trust_remote_code))
            else:
                if self._embedder is None:
                    raise RuntimeError("self-consistency's embedding backend needs the local embedder")
                self._agreement = SentenceAgreement(embedder=self._embedder)
        return self._agreement

    # -- the evaluators ------------------------------------------------------------------------

    def specs(self) -> list[_Spec]:
        cfg, specs = self.cfg, []
        for a in cfg.assertions:
            parameters: dict = {}
            where, checks = assertion_sql(a, parameters)
            specs.append(_Spec(f"assertion:{a.name}", evaluator_id(f"assertion:{a.name}", a), a.sample,
                               a.max_per_minute, None, self._assertion(a), where, parameters,
                               tuple(f"toUInt8({c})" for c in checks)))
        g = cfg.grounding
        if g.enabled:
            needles = [f"<{t}" for t in g.context.tags] + list(g.context.line_prefixes)
            needles += ["tool: "] if g.context.tool_results else []
            specs.append(_Spec("grounding", evaluator_id("grounding", g), g.sample, g.max_per_minute, None,
                               self._grounding_one,
                               " AND multiSearchAnyCaseInsensitive(prompt_text, {g_needles:Array(String)})",
                               {"g_needles": needles}))
        c = cfg.consistency
        if c.enabled:
            specs.append(_Spec("self_consistency", evaluator_id("self_consistency", c), c.sample, c.max_per_minute,
                               c.daily_budget_usd, self._consistency_one,
                               " AND NOT match(prompt_text, '(^|\\n)(tool|function): ')"))
        j = cfg.judge
        if j.enabled:
            specs.append(_Spec("judge", evaluator_id("judge", j), j.sample, j.max_per_minute, j.daily_budget_usd,
                               self._judge_one))
        return specs

    def _assertion(self, a: Any) -> Evaluate:
        checker = self._checkers.setdefault(a.name, AssertionChecker(a))
        names = sql_check_names(a)

        def evaluate(request: Candidate, headers: dict[str, str]) -> Scored:
            failed_sql = [name for name, failed in zip(names, request.extras, strict=True) if failed]
            result = checker.check(request.completion_text, failed_sql)
            return result.score, result.label, result.details, 0.0
        return evaluate

    def _grounding_one(self, request: Candidate, headers: dict[str, str]) -> Scored:
        from monitoring.evaluators.grounding import score_answer
        g = self.cfg.grounding
        found = extract_grounding(request.prompt_text, g.context)
        if not found.context:
            return None, "no_context", {"reason": f"under {g.context.min_chars} characters of context"}, 0.0
        backend = self._grounding_backend()
        result = score_answer(backend, found.context, request.completion_text, threshold=g.threshold)
        details = result.details(g.threshold) | {"context_sources": list(found.sources), "backend": backend.name}
        return result.score, result.label, details, 0.0

    def _consistency_one(self, request: Candidate, headers: dict[str, str]) -> Scored | None:
        from monitoring.evaluators.consistency import self_consistency
        c = self.cfg.consistency
        result = self_consistency(self._gateway().chat, self._consistency_agreement(), model=request.public_model,
                                  prompt_text=request.prompt_text, answer=request.completion_text,
                                  samples=c.samples, temperature=c.temperature, threshold=c.threshold,
                                  headers=headers)
        if result is None:
            return None, "not_applicable", {"reason": "no sentence to check"}, 0.0
        return result.score, result.label, result.details | {"backend": c.backend}, result.cost_usd

    def _judge_one(self, request: Candidate, headers: dict[str, str]) -> Scored:
        from monitoring.evaluators.judge import Judge
        j = self.cfg.judge
        models = self._gateway()
        reference, cost = None, 0.0
        if j.mode == "pairwise":
            messages = [{"role": "system" if r == "developer" else r, "content": t}
                        for r, t in parse_messages(request.prompt_text) if r not in ("tool", "function")]
            answer = models.chat(j.reference_model or "", messages, headers=headers)
            reference, cost = answer.text, answer.cost_usd
        result = Judge(j, models.chat).evaluate(conversation=request.prompt_text, answer=request.completion_text,
                                                reference=reference, headers=headers)
        return result.score, result.label, result.details, result.cost_usd + cost

    # -- the run -------------------------------------------------------------------------------

    def run(self, client: Any, database: str, *, now: datetime | None = None) -> EvaluationRun:
        started = time.perf_counter()
        now = now or datetime.now(timezone.utc)
        outcome = EvaluationRun(now=now)
        for spec in self.specs():
            try:
                done, rows = self._run_one(client, database, spec, now)
            except Exception as exc:
                log.warning("monitor: evaluator %s failed: %s", spec.name, exc, exc_info=True)
                outcome.outcomes.append(EvaluatorOutcome(spec.name, spec.evaluator_id, errors=1))
                continue
            outcome.outcomes.append(done)
            outcome.rows += rows
        outcome.seconds = time.perf_counter() - started
        if outcome.outcomes:
            log.info("monitor: evaluators wrote %d rows in %.2f s (%s)", len(outcome.rows), outcome.seconds,
                     ", ".join(f"{o.evaluator} {o.written}" + (" rate-capped" if o.rate_capped else "")
                               + (" budget-capped" if o.budget_capped else "") for o in outcome.outcomes))
        return outcome

    def _run_one(self, client: Any, database: str, spec: _Spec, now: datetime
                 ) -> tuple[EvaluatorOutcome, list[EvaluationRow]]:
        done = EvaluatorOutcome(spec.name, spec.evaluator_id)
        allowance = spec.max_per_minute - written_last_minute(client, database, spec.evaluator_id, now)
        limit = min(self.cfg.max_per_run, max(0, allowance))
        candidates = pending(client, database, evaluator_id=spec.evaluator_id, sample=spec.sample, now=now,
                             lookback_s=self.cfg.lookback_s, settle_s=self.cfg.settle_s, limit=limit + 1,
                             extra_where=spec.extra_where, extra_parameters=spec.extra_parameters,
                             extra_columns=spec.extra_columns)
        done.rate_capped = len(candidates) > limit and allowance <= self.cfg.max_per_run
        candidates = candidates[:limit]
        done.candidates = len(candidates)
        spent = spent_today(client, database, spec.name, now) if spec.budget_usd is not None else 0.0
        rows: list[EvaluationRow] = []
        for request in candidates:
            if spec.budget_usd is not None and spent >= spec.budget_usd:
                done.budget_capped = True
                break
            t0 = time.perf_counter()
            with self._span(spec, request) as headers:
                try:
                    scored = spec.evaluate(request, headers)
                except Exception as exc:             # a failed call: an error row, never a score
                    log.debug("monitor: %s on %s failed", spec.name, request.request_id, exc_info=True)
                    scored = (None, "error", {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}, 0.0)
            if scored is None:
                continue
            score, label, details, cost = scored
            done.errors += label == "error"
            spent += cost
            done.cost_usd += cost
            rows.append(EvaluationRow(
                ts=datetime.now(timezone.utc), request_id=request.request_id, trace_id=request.trace_id,
                public_model=request.public_model, deployment=request.deployment, tenant=request.tenant,
                prompt_fingerprint=request.prompt_fingerprint, evaluator=spec.name, evaluator_id=spec.evaluator_id,
                score=None if score is None else min(1.0, max(0.0, float(score))), label=label,
                details=json.dumps(details, ensure_ascii=False, default=str),
                latency_ms=(time.perf_counter() - t0) * 1000, cost_usd=cost))
        if rows:
            client.insert(f"{database}.{EVALUATIONS}", [r.as_row() for r in rows],
                          column_names=list(EVALUATION_COLUMNS))
        done.written = len(rows)
        return done, rows

    @contextmanager
    def _span(self, spec: _Spec, request: Candidate) -> Iterator[dict[str, str]]:
        """The evaluation's span, linked to the evaluated request's; yields the headers
        (traceparent) for the gateway calls made inside it."""
        headers: dict[str, str] = {}
        if self._tracer is None:
            yield headers
            return
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        links = []
        try:
            linked = trace.SpanContext(int(request.trace_id, 16), int(request.span_id or "0", 16), is_remote=True,
                                       trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED))
            if linked.is_valid:
                links.append(trace.Link(linked, {"sluice.link": "evaluated_request"}))
        except ValueError:
            pass
        attributes = {"sluice.evaluator": spec.name, "sluice.evaluator_id": spec.evaluator_id,
                      "sluice.evaluated.request_id": request.request_id, "gen_ai.request.model": request.public_model}
        with self._tracer.start_as_current_span("sluice.evaluate", links=links, attributes=attributes):
            TraceContextTextMapPropagator().inject(headers)
            yield headers

    def close(self) -> None:
        if self._models is not None:
            self._models.close()
            self._models = None
