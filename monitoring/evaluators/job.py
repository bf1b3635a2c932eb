"""The monitor's one scheduled job: the drift run, then the evaluators.

`MonitorLoop(..., run_once=MonitorJob(tracer=...))` runs it on the loop's schedule and lock
(one job runner for drift and evaluators); `sluice monitor run --once` calls it once. The
job keeps the evaluators' loaded models and HTTP client between runs. The evaluators run
after the drift run even when it failed (and the drift error is raised afterwards, for the
loop to count); an evaluator failure is logged and never fails the drift run.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("sluice.monitoring")


class MonitorJob:
    def __init__(self, *, tracer: Any = None, transport: Any = None) -> None:
        self._tracer = tracer
        self._transport = transport
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
                self._evaluators = Evaluators(cfg, embedder=embedder, tracer=self._tracer, transport=self._transport)
            self.last_evaluation = self._evaluators.run(client, database, now=now)
        except Exception:
            log.warning("monitor: the evaluators failed this run", exc_info=True)

    def close(self) -> None:
        if self._evaluators is not None:
            self._evaluators.close()
            self._evaluators = None
