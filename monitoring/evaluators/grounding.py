"""Grounding: is each sentence of an answer supported by the request's context?

    result = score_answer(backend, context, answer, threshold=0.5)

The answer is split into sentences (sentences.py); the backend scores each in [0, 1]
(1: supported); the answer's score is its **least supported sentence** (one invented claim
makes an answer unfaithful however good the rest is), and the sentences under `threshold`
are listed in `details.unsupported`.

Backends:
- `EmbeddingGrounding` (default, offline, a few ms): the cosine of the sentence with its
  closest context passage (single sentences and pairs of neighbours) under the cache's local
  MiniLM, blended with the share of its content words found in the context, then cut down
  by the lexical checks (lexical.py) of numbers, names and negation that embeddings are
  blind to. Without an embedder it is the lexical half alone.
- `NliGrounding` (nli.py): a cross-encoder's entailment probability, context passage as
  premise, sentence as hypothesis (HHEM-class models).
The constants below were set on the development half of monitoring/data/grounding_dev.jsonl
only (docs/monitoring.md, "Hallucination evaluators").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from monitoring.evaluators.lexical import ContextIndex
from monitoring.evaluators.sentences import split_sentences

# Tuned on dev (see the module docstring).
SIMILARITY_RAMP = (0.45, 0.80)     # cosine -> 0 .. 1
COVERAGE_RAMP = (0.40, 0.85)       # share of content words in the context -> 0 .. 1
SIMILARITY_WEIGHT = 0.5            # the rest is coverage
NUMBER_PENALTY = 0.2               # multiplies the score of a sentence with a number not in the context
NAME_PENALTY = 0.3
NEGATION_PENALTY = 0.4
_MEMO_MAX = 4096


@dataclass(slots=True)
class SentenceScore:
    sentence: str
    score: float
    closest: str = ""
    problems: list[str] = field(default_factory=list)


@dataclass(slots=True)
class GroundingResult:
    score: float | None                # None: no sentence to score
    label: str                         # supported | unsupported | no_claims
    sentences: list[SentenceScore]

    def details(self, threshold: float) -> dict[str, Any]:
        return {"threshold": threshold, "sentences": len(self.sentences),
                "unsupported": [{"sentence": s.sentence, "score": round(s.score, 4), "problems": s.problems,
                                 "closest": s.closest[:300]} for s in self.sentences if s.score < threshold]}


class GroundingBackend(Protocol):
    name: str

    def score_sentences(self, context: str, sentences: list[str]) -> list[SentenceScore]: ...


def ramp(value: float, low: float, high: float) -> float:
    return float(min(1.0, max(0.0, (value - low) / (high - low))))


def passages(context: str, *, window: int = 2) -> list[str]:
    """The context's sentences and every run of `window` neighbours (a claim may join two)."""
    sentences = split_sentences(context, min_words=1) or [context]
    runs = [" ".join(sentences[i:i + window]) for i in range(len(sentences) - window + 1)] if window > 1 else []
    return list(dict.fromkeys(sentences + runs))


class EmbeddingGrounding:
    """MiniLM similarity + lexical checks (see the module docstring). `embedder`: anything
    with `embed_sync(texts) -> list[vector | None]` (cache.embedders.LocalEmbedder); None:
    lexical only. Blocking: run it off the event loop."""

    def __init__(self, embedder: Any = None) -> None:
        self._embedder = embedder
        self.name = "embedding" if embedder is not None else "lexical"
        self._memo: dict[str, np.ndarray | None] = {}

    def _vectors(self, texts: list[str]) -> list[np.ndarray | None]:
        missing = [t for t in dict.fromkeys(texts) if t not in self._memo]
        if missing:
            if len(self._memo) + len(missing) > _MEMO_MAX:
                self._memo.clear()
            for text, vector in zip(missing, self._embedder.embed_sync(missing), strict=True):
                self._memo[text] = vector
        return [self._memo.get(t) for t in texts]

    def score_sentences(self, context: str, sentences: list[str]) -> list[SentenceScore]:
        index = ContextIndex(context)
        chunks = passages(context)
        similarity, closest = self._similarities(chunks, sentences)
        scores = []
        for i, sentence in enumerate(sentences):
            found = index.check(sentence, closest[i])
            coverage = ramp(found.coverage, *COVERAGE_RAMP)
            if similarity is None:
                score = coverage
            else:
                score = SIMILARITY_WEIGHT * ramp(similarity[i], *SIMILARITY_RAMP) + (1 - SIMILARITY_WEIGHT) * coverage
            if found.unsupported_numbers:
                score *= NUMBER_PENALTY
            if found.unsupported_names:
                score *= NAME_PENALTY
            if found.negation_mismatch or found.opposites:
                score *= NEGATION_PENALTY
            problems = found.problems()
            if found.coverage < COVERAGE_RAMP[0]:
                problems.append(f"few of its words are in the context ({found.coverage:.0%})")
            scores.append(SentenceScore(sentence, score, closest[i], problems))
        return scores

    def _similarities(self, chunks: list[str], sentences: list[str]) -> tuple[list[float] | None, list[str]]:
        if self._embedder is None:
            # the closest passage by shared content words (for the negation check)
            from monitoring.evaluators.lexical import content_stems
            chunk_stems = [content_stems(c) for c in chunks]
            closest = []
            for sentence in sentences:
                stems = content_stems(sentence)
                best = max(range(len(chunks)), key=lambda j: len(stems & chunk_stems[j]) / (len(chunk_stems[j]) or 1))
                closest.append(chunks[best])
            return None, closest
        chunk_vectors = [(c, v) for c, v in zip(chunks, self._vectors(chunks), strict=True) if v is not None]
        sentence_vectors = self._vectors(sentences)
        if not chunk_vectors:
            return [0.0] * len(sentences), [""] * len(sentences)
        matrix = np.vstack([v for _, v in chunk_vectors])
        sims, closest = [], []
        for vector in sentence_vectors:
            if vector is None:
                sims.append(0.0)
                closest.append("")
                continue
            row = matrix @ vector
            best = int(np.argmax(row))
            sims.append(float(row[best]))
            closest.append(chunk_vectors[best][0])
        return sims, closest


def score_answer(backend: GroundingBackend, context: str, answer: str, *, threshold: float = 0.5) -> GroundingResult:
    sentences = split_sentences(answer)
    if not sentences:
        return GroundingResult(None, "no_claims", [])
    scored = backend.score_sentences(context, sentences)
    worst = min(s.score for s in scored)
    return GroundingResult(worst, "supported" if worst >= threshold else "unsupported", scored)
