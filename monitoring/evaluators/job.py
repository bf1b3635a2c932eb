"""The monitor's one scheduled job: the drift run, then the evaluators.

`MonitorLoop(..., run_once=MonitorJob(tracer=...))` runs it on the loop's schedule and lock
(one job runner for drift and evaluators); `sluice monitor run --once` calls it once. The
job keeps the evaluators' loaded models and HTTP client between runs. The evaluators run
after the drift run even when it failed (and the drift error is raised afterwards, for the
loop to count); an evaluator failure is logged and never fails the drift run.

Embeddings: the evaluators use the embedder the loop passes (the drift runner's); when
there is none and an evaluator needs one (grounding's or self-consistency's `embedding`
backend), a job given `models_dir` loads the cache's local MiniLM there itself, once (the
in-process monitor: the gateway's data directory), for the evaluators only; without it,
grounding runs its lexical half.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("sluice.monitoring")


class MonitorJob:
    def __init__(self, *, tracer: Any = None, transport: Any = None, models_dir: Path | None = None) -> None:
        self._tracer = tracer
        self._transport = transport
        self._models_dir = models_dir
        self._own_embedder: Any = None
        self._embedder_failed = False
        self._evaluators: Any = None
        self.last_evaluation: Any = None          # the last EvaluationRun (tests, logs)

    def __call__(self, client: Any, database: str, cfg: Any, *, embedder: Any = None, **kwargs: Any) -> Any:
        from monitoring.runner import run_once          # scipy / scikit-learn: imported on the first run
        try:
            return run_once(client, database, cfg, embedder=embedder, **kwargs)
        finally:
            if cfg.evaluators.enabled:
                self._evaluate(client, database, cfg, embedder, kwargs.get("now"))

    def _evaluate(self, client: Any, database: str, cfg: Any, embedder: Any, now: Any) -> None:
        try:
            if self._evaluators is None:
                from monitoring.evaluators.run import Evaluators
                self._evaluators = Evaluators(cfg, embedder=embedder or self._local_embedder(cfg), tracer=self._tracer,
                                              transport=self._transport)
            self.last_evaluation = self._evaluators.run(client, database, now=now)
        except Exception:
            log.warning("monitor: the evaluators failed this run", exc_info=True)

    def _local_embedder(self, cfg: Any) -> Any:
        evaluators = cfg.evaluators
        wanted = ((evaluators.grounding.enabled and evaluators.grounding.backend == "embedding")
                  or (evaluators.consistency.enabled and evaluators.consistency.backend == "embedding"))
        if not wanted or self._models_dir is None or self._embedder_failed:
            return None
        try:
            from cache.embedders import LocalEmbedder
            embedder = LocalEmbedder(self._models_dir)
            asyncio.run(embedder.start())          # this thread has no event loop: the monitor's own
        except Exception:
            self._embedder_failed = True
            log.warning("monitor: no local embedder for the evaluators (grounding runs lexical only)", exc_info=True)
            return None
        self._own_embedder = embedder
        return embedder

    def close(self) -> None:
        if self._evaluators is not None:
            self._evaluators.close()
            self._evaluators = None
        if self._own_embedder is not None:
            embedder, self._own_embedder = self._own_embedder, None
            asyncio.run(embedder.aclose())
