"""Self-consistency, in the manner of SelfCheckGPT (Manakul et al., 2023).

A model that knows a fact says it again when asked again; one that invents it says
something else each time. The evaluator re-asks the evaluated request `samples` times (the
same messages to the same public model, at `temperature` with a different `seed` each,
through the gateway with the evaluator key) and scores each sentence of the original answer
by its agreement with the samples:

- `embedding` backend: the sentence's best cosine with the sentences of a sample (local
  MiniLM), mapped by `AGREEMENT_RAMP`, and cut to a fifth when one of its numbers is missing
  from that sample (a changed figure keeps a high cosine);
- `nli` backend: P(sample entails sentence), the cross-encoder of nli.py.

A sentence's agreement is the mean over the samples; the answer's score is the mean over
its sentences (SelfCheckGPT's passage score), and the sentences under the threshold are
stored. Conversations with tool messages are not re-asked (a tool call cannot be replayed
from the stored text).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from monitoring.evaluators.context import parse_messages
from monitoring.evaluators.gateway_client import Completion
from monitoring.evaluators.grounding import ramp
from monitoring.evaluators.lexical import numbers
from monitoring.evaluators.nli import CrossEncoder
from monitoring.evaluators.sentences import split_sentences

AGREEMENT_RAMP = (0.55, 0.90)
NUMBER_PENALTY = 0.2
Chat = Callable[..., Completion]       # GatewayModels.chat


@dataclass(slots=True)
class ConsistencyResult:
    score: float | None
    label: str
    details: dict[str, Any]
    cost_usd: float


def replayable_messages(prompt_text: str) -> list[dict[str, str]] | None:
    """The stored conversation as chat messages; None when it cannot be replayed (tools)."""
    messages = parse_messages(prompt_text)
    if not messages or any(role in ("tool", "function") for role, _ in messages):
        return None
    return [{"role": "system" if role == "developer" else role, "content": content} for role, content in messages]


class SentenceAgreement:
    """Agreement of sentences with sample answers, by one of the two backends."""

    def __init__(self, *, embedder: Any = None, encoder: CrossEncoder | None = None) -> None:
        if (embedder is None) == (encoder is None):
            raise ValueError("give an embedder or a cross-encoder")
        self._embedder, self._encoder = embedder, encoder

    def agreement(self, sentences: list[str], samples: list[str]) -> list[float]:
        per_sample = [self._with_sample(sentences, sample) for sample in samples]
        return np.mean(np.asarray(per_sample), axis=0).tolist() if per_sample else [0.0] * len(sentences)

    def _with_sample(self, sentences: list[str], sample: str) -> list[float]:
        if not sample.strip():
            return [0.0] * len(sentences)
        if self._encoder is not None:
            return self._encoder.entailment([(sample, s) for s in sentences])
        parts = split_sentences(sample, min_words=1) or [sample]
        vectors = self._embedder.embed_sync(sentences + parts)
        mine, theirs = vectors[:len(sentences)], [v for v in vectors[len(sentences):] if v is not None]
        if not theirs:
            return [0.0] * len(sentences)
        matrix = np.vstack(theirs)
        sample_numbers = numbers(sample)
        scores = []
        for sentence, vector in zip(sentences, mine, strict=True):
            score = 0.0 if vector is None else ramp(float(np.max(matrix @ vector)), *AGREEMENT_RAMP)
            if numbers(sentence) - sample_numbers:
                score *= NUMBER_PENALTY
            scores.append(score)
        return scores


def self_consistency(chat: Chat, agreement: SentenceAgreement, *, model: str, prompt_text: str, answer: str,
                     samples: int, temperature: float, threshold: float,
                     headers: Mapping[str, str] | None = None) -> ConsistencyResult | None:
    """None: not applicable (tool conversation, or no sentence to check)."""
    messages = replayable_messages(prompt_text)
    sentences = split_sentences(answer)
    if messages is None or not sentences:
        return None
    texts: list[str] = []
    cost = 0.0
    for i in range(samples):
        completion = chat(model, messages, temperature=temperature, seed=i + 1, headers=headers)
        texts.append(completion.text)
        cost += completion.cost_usd
    scores = agreement.agreement(sentences, texts)
    score = float(np.mean(scores))
    details = {"samples": samples, "threshold": threshold,
               "inconsistent": [{"sentence": s, "agreement": round(a, 4)}
                                for s, a in zip(sentences, scores, strict=True) if a < threshold],
               "sample_answers": [t[:300] for t in texts]}
    return ConsistencyResult(score, "consistent" if score >= threshold else "inconsistent", details, cost)
