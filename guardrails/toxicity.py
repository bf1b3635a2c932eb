"""Toxicity scoring: Detoxify when its weights load, else the configured fallback.

Scorers block (a BERT forward pass is tens of milliseconds); ToxicityBatcher runs
them in one worker thread and scores together the texts that arrived while the
previous batch was running, so concurrent requests share forward passes.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from guardrails.config import GuardrailsConfig

log = logging.getLogger("sluice.guardrails")

Scores = dict[str, float]

# Detoxify truncates at the tokenizer's limit (512 tokens for its models); long texts
# are cut into segments and a text's score is the maximum over its segments.
SEGMENT_CHARS = 1200


class ToxicityUnavailable(RuntimeError):
    """No model could be loaded and the configured fallback is fail-closed."""


class ToxicityScorer(Protocol):
    name: str

    def predict(self, texts: list[str]) -> list[Scores]: ...


class DetoxifyScorer:
    def __init__(self, model: Any, name: str) -> None:
        self._model = model
        self.name = name

    def predict(self, texts: list[str]) -> list[Scores]:
        raw = self._model.predict(texts)
        out: list[Scores] = [{} for _ in texts]
        for category, values in raw.items():
            # Detoxify squeezes a batch of one down to a bare float.
            values = values if isinstance(values, list) else [values]
            for i, value in enumerate(values):
                out[i][category] = float(value)
        return out


_THREAT = re.compile(
    r"\b(?:i(?:'m| am)?\s*(?:going\s+to|gonna|will|'ll)\s+(?:kill|hurt|murder|shoot|stab|beat|find)\s+you"
    r"|you(?:'re| are)\s+(?:going\s+to\s+)?(?:die|dead)\b|watch\s+your\s+back)",
    re.IGNORECASE,
)


class LightScorer:
    """Offline fallback: alt-profanity-check's linear model plus a threat pattern.

    It only knows "offensive or not", reported as `toxicity` (and `insult`, which it
    mostly detects); `threat` comes from a short pattern list. Much weaker than
    Detoxify, but sub-millisecond and dependency-light.
    """

    name = "light"

    def __init__(self) -> None:
        import numpy as np
        from profanity_check import profanity_check as model

        # The package's predict_prob goes through sklearn's CalibratedClassifierCV, whose
        # per-call validation (label encoding, unique values) cost more than the model
        # itself (profiled: ~75% of this scorer). The model is k LinearSVCs, each with a
        # sigmoid calibration, averaged: computed here directly from their parameters,
        # equal to predict_prob (tests/guardrails check it).
        calibrated = model.model.calibrated_classifiers_
        self._vectorizer = model.vectorizer
        self._weights = np.vstack([c.estimator.coef_.ravel() for c in calibrated]).T      # features x k
        self._intercepts = np.array([float(c.estimator.intercept_[0]) for c in calibrated])
        self._a = np.array([c.calibrators[0].a_ for c in calibrated])
        self._b = np.array([c.calibrators[0].b_ for c in calibrated])

    def probabilities(self, texts: list[str]):
        import numpy as np
        decision = self._vectorizer.transform(texts) @ self._weights + self._intercepts
        return (1.0 / (1.0 + np.exp(self._a * decision + self._b))).mean(axis=1)

    def predict(self, texts: list[str]) -> list[Scores]:
        probs = self.probabilities(texts)
        out: list[Scores] = []
        for text, p in zip(texts, probs):
            prob = float(p)
            out.append({"toxicity": prob, "insult": prob, "threat": 0.95 if _THREAT.search(text) else 0.0})
        return out


class UnavailableScorer:
    name = "unavailable"

    def __init__(self, reason: str) -> None:
        self._reason = reason

    def predict(self, texts: list[str]) -> list[Scores]:
        raise ToxicityUnavailable(f"toxicity model unavailable: {self._reason}")


def load_scorer(cfg: GuardrailsConfig) -> ToxicityScorer:
    """Load Detoxify (blocking); on failure say so plainly and apply the fallback."""
    source = str(cfg.toxicity_checkpoint) if cfg.toxicity_checkpoint else cfg.toxicity_model
    if source is None:
        # `toxicity_model: null` and no checkpoint: the operator chose no Detoxify weights,
        # so nothing is downloaded (nor torch imported) before the light classifier.
        if cfg.toxicity_fallback == "light":
            try:
                scorer = LightScorer()
            except ImportError as exc:
                log.error("guardrails: toxicity_model is null and the light classifier is not installed (%s); "
                          "every toxicity check will fail closed", exc)
                return UnavailableScorer(f"light classifier unavailable ({exc})")
            log.info("guardrails: toxicity uses the light offline classifier (toxicity_model: null)")
            return scorer
        return UnavailableScorer("toxicity_model is null and toxicity_fallback is fail-closed")
    try:
        from detoxify import Detoxify

        if cfg.toxicity_checkpoint is not None:
            model = Detoxify(
                checkpoint=str(cfg.toxicity_checkpoint),
                huggingface_config_path=str(cfg.toxicity_config_dir) if cfg.toxicity_config_dir else None,
            )
        else:
            model = Detoxify(model_type=cfg.toxicity_model)
        log.info("guardrails: toxicity model loaded from %s", source)
        return DetoxifyScorer(model, name=f"detoxify:{cfg.toxicity_checkpoint.name if cfg.toxicity_checkpoint else source}")
    except Exception as exc:  # noqa: BLE001 - any loading failure means "use the fallback"
        reason = f"{type(exc).__name__}: {exc}"
    if cfg.toxicity_fallback == "light":
        try:
            scorer = LightScorer()
        except ImportError as exc:
            reason += f"; light fallback unavailable too ({exc})"
            log.error("guardrails: toxicity weights (%s) could not be loaded (%s); every toxicity check will fail closed", source, reason)
            return UnavailableScorer(reason)
        log.warning(
            "guardrails: toxicity weights (%s) could not be loaded (%s); using the light offline classifier instead",
            source,
            reason,
        )
        return scorer
    log.error(
        "guardrails: toxicity weights (%s) could not be loaded (%s); toxicity_fallback is fail-closed, so every "
        "request with a toxicity policy will be refused",
        source,
        reason,
    )
    return UnavailableScorer(reason)


def segments(text: str) -> list[str]:
    """Split a long text at whitespace into pieces the model sees whole."""
    if len(text) <= SEGMENT_CHARS:
        return [text]
    pieces: list[str] = []
    start = 0
    while start < len(text):
        end = min(len(text), start + SEGMENT_CHARS)
        if end < len(text):
            space = text.rfind(" ", start + SEGMENT_CHARS // 2, end)
            end = space if space != -1 else end
        pieces.append(text[start:end])
        start = end
    return pieces


class _Request:
    """One request's pieces on their way through the model, a batch at a time."""

    __slots__ = ("pieces", "taken", "left", "scores", "future")

    def __init__(self, pieces: list[str], future: asyncio.Future[list[Scores]]) -> None:
        self.pieces = pieces
        self.taken = 0                                   # pieces handed to a forward pass
        self.left = len(pieces)                          # pieces not scored yet
        self.scores: list[Scores] = [{} for _ in pieces]
        self.future = future


class ToxicityBatcher:
    """Scores texts in one worker thread, batching whatever is queued.

    A forward pass takes at most `max_batch` pieces, drawn from the waiting tenants in
    turn (one piece each per round), so one tenant's long text is spread over several
    passes and cannot hold the model while another tenant waits; pieces of a request
    that stopped waiting (budget, disconnect) are never scored.
    """

    def __init__(self, scorer: ToxicityScorer, max_batch: int) -> None:
        self.scorer = scorer
        self._max_batch = max_batch
        self._waiting: dict[str, deque[_Request]] = {}   # tenant -> its requests, oldest first
        self._turns: deque[str] = deque()
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sluice-toxicity")
        self.batches = 0  # forward passes run, for tests and metrics

    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._worker = asyncio.create_task(self._run(), name="sluice-toxicity-batcher")

    async def aclose(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def score(self, texts: list[str], tenant: str = "") -> list[Scores]:
        """Maximum score per category for each text (over its segments)."""
        if self._wakeup is None:
            raise RuntimeError("ToxicityBatcher.start() was not called")
        pieces: list[str] = []
        owner: list[int] = []
        for i, text in enumerate(texts):
            for piece in segments(text):
                pieces.append(piece)
                owner.append(i)
        merged: list[Scores] = [{} for _ in texts]
        if not pieces:
            return merged
        request = _Request(pieces, asyncio.get_running_loop().create_future())
        queue = self._waiting.get(tenant)
        if queue is None:
            queue = self._waiting[tenant] = deque()
            self._turns.append(tenant)
        queue.append(request)
        self._wakeup.set()
        piece_scores = await request.future
        for i, scores in zip(owner, piece_scores):
            for category, value in scores.items():
                merged[i][category] = max(value, merged[i].get(category, 0.0))
        return merged

    def _next_batch(self) -> list[tuple[_Request, int]]:
        """Up to max_batch pieces, one per waiting tenant per round."""
        batch: list[tuple[_Request, int]] = []
        while len(batch) < self._max_batch and self._turns:
            for _ in range(len(self._turns)):
                if len(batch) >= self._max_batch:
                    break
                tenant = self._turns.popleft()
                queue = self._waiting[tenant]
                while queue and queue[0].future.done():        # stopped waiting: drop it
                    queue.popleft()
                if queue:
                    request = queue[0]
                    batch.append((request, request.taken))
                    request.taken += 1
                    if request.taken == len(request.pieces):
                        queue.popleft()
                if queue:
                    self._turns.append(tenant)
                else:
                    del self._waiting[tenant]
        return batch

    async def _run(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while True:
                batch = self._next_batch()
                if not batch:
                    break
                try:
                    await self._predict(loop, batch)
                except Exception as exc:  # noqa: BLE001
                    requests = list(dict.fromkeys(request for request, _ in batch))
                    if len(requests) == 1:
                        _fail(requests[0], exc)
                        continue
                    # One bad text must not fail the requests it was batched with:
                    # score each request's pieces alone and let only the failing ones fail.
                    for request in requests:
                        try:
                            await self._predict(loop, [item for item in batch if item[0] is request])
                        except Exception as job_exc:  # noqa: BLE001 - delivered to the waiting request
                            _fail(request, job_exc)

    async def _predict(self, loop: asyncio.AbstractEventLoop, batch: list[tuple[_Request, int]]) -> None:
        texts = [request.pieces[i] for request, i in batch]
        scores = await loop.run_in_executor(self._executor, self.scorer.predict, texts)
        self.batches += 1
        for (request, i), piece_scores in zip(batch, scores):
            request.scores[i] = piece_scores
            request.left -= 1
            if request.left == 0 and not request.future.done():
                request.future.set_result(request.scores)


def _fail(request: _Request, exc: Exception) -> None:
    if not request.future.done():
        request.future.set_exception(exc)
