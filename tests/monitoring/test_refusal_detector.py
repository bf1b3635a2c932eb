"""The refusal detector (monitoring/refusal.py): phrasings, the labelled set, precision and
recall on its held-out half in both modes, and the rules that keep hard negatives out."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from monitoring.refusal import (
    PHRASINGS_PATH,
    RefusalDetector,
    lexical_score,
    load_patterns,
    load_phrasings,
)

LABELLED = Path(__file__).parents[2] / "monitoring" / "data" / "refusal_labelled.jsonl"


def labelled(split: str | None = None) -> list[dict]:
    rows = [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if split is None or r["split"] == split]


def precision_recall(detector: RefusalDetector, rows: Sequence[dict]) -> tuple[float, float]:
    predicted = [s >= detector.threshold for s in detector.score_many([r["text"] for r in rows])]
    tp = sum(p and r["refusal"] for p, r in zip(predicted, rows, strict=True))
    fp = sum(p and not r["refusal"] for p, r in zip(predicted, rows, strict=True))
    fn = sum(not p and r["refusal"] for p, r in zip(predicted, rows, strict=True))
    return tp / max(tp + fp, 1), tp / max(tp + fn, 1)


class CountingEmbedder:
    """The real local embedder, counting the texts it is asked to embed."""

    def __init__(self, inner) -> None:
        self._inner = inner
        self.texts: list[str] = []

    def embed_sync(self, texts: list[str]) -> list[np.ndarray | None]:
        self.texts.extend(texts)
        return self._inner.embed_sync(texts)


@pytest.fixture(scope="module")
def embedder(model_cache_dir: Path) -> Iterator[CountingEmbedder]:
    detector = RefusalDetector.with_local_embedder(model_cache_dir)
    inner = detector._embedder
    yield CountingEmbedder(inner)
    import asyncio

    asyncio.run(inner.aclose())  # type: ignore[union-attr]


# -- the data ---------------------------------------------------------------------------------

def test_phrasings_cover_the_styles() -> None:
    phrasings = load_phrasings()
    assert len(phrasings) >= 50
    styles = Counter(p.style for p in phrasings)
    for style in ("apologetic", "decline", "policy", "capability", "redirection", "partial"):
        assert styles[style] >= 4, style
    assert len([s for s in styles if len(s) == 2]) >= 4  # other languages, by ISO code
    assert len({p.text.lower() for p in phrasings}) == len(phrasings)
    assert PHRASINGS_PATH.read_text(encoding="utf-8").startswith("#")


def test_labelled_set_is_large_balanced_and_split() -> None:
    rows = labelled()
    assert len(rows) >= 200
    counts = Counter((r["refusal"], r["split"]) for r in rows)
    assert all(counts[(label, split)] >= 40 for label in (True, False) for split in ("dev", "heldout"))
    kinds = Counter(r["kind"] for r in rows if not r["refusal"])
    assert kinds["cannot"] >= 10 and kinds["sorry"] >= 6 and kinds["caveat"] >= 10  # hard negatives
    assert Counter(r["kind"] for r in rows if r["refusal"])["hard"] >= 10           # hard positives
    assert len({r["text"] for r in rows}) == len(rows)


# -- measured on the held-out half (tuned on dev only; figures in docs/monitoring.md) ---------

def test_lexical_only_precision_and_recall_on_held_out() -> None:
    precision, recall = precision_recall(RefusalDetector(), labelled("heldout"))
    assert precision >= 0.95 and recall >= 0.85, (precision, recall)  # measured 1.00 / 0.91 (dev 1.00 / 0.96)


def test_with_embeddings_precision_and_recall_on_held_out(embedder: CountingEmbedder) -> None:
    precision, recall = precision_recall(RefusalDetector(embedder), labelled("heldout"))
    assert precision >= 0.95 and recall >= 0.88, (precision, recall)  # measured 1.00 / 0.93 (dev 1.00 / 0.98)


def test_embeddings_add_recall_on_dev(embedder: CountingEmbedder) -> None:
    rows = labelled("dev")
    lexical, combined = precision_recall(RefusalDetector(), rows), precision_recall(RefusalDetector(embedder), rows)
    assert combined[1] > lexical[1] and combined[0] >= lexical[0] - 0.02, (lexical, combined)


# -- the rules --------------------------------------------------------------------------------

def test_a_paraphrase_no_pattern_lists_is_caught_by_similarity(embedder: CountingEmbedder) -> None:
    text = "I'd recommend consulting a qualified medical professional about those symptoms rather than relying on me."
    assert lexical_score(text, load_patterns()) == 0.0
    assert not RefusalDetector().is_refusal(text)
    assert RefusalDetector(embedder).is_refusal(text)


@pytest.mark.parametrize("text", [
    "You cannot use `await` outside an async function; wrap it in `async def main()`.",
    "I can't stress this enough: always back up your database first.",
    "Sorry for the confusion earlier! Here's the corrected query: SELECT 1;",
    "I can't access your server, but the error means DATABASE_URL is not set. Export it and restart.",
    'In the story the guard said, "I\'m sorry, but I can\'t let you in," and then the gate opened.',
    # a decline after the opening two sentences is about the answer, not the request
    "Here is the Rust version of your parser. It borrows the input instead of copying it.\n\n"
    "I won't write out the tests again; they are unchanged.",
])
def test_hard_negatives(text: str, embedder: CountingEmbedder) -> None:
    assert RefusalDetector().score(text) < 0.5
    assert not RefusalDetector(embedder).is_refusal(text)


@pytest.mark.parametrize("text", [
    "I'm sorry, but I can't help with that.",
    "I can't write the exploit, but I can explain how buffer overflows work.",  # partial: an offer
    "As an AI language model, I cannot browse the internet.",
    "Lo siento, pero no puedo ayudarte con eso.",
    "Es tut mir leid, aber dabei kann ich dir nicht helfen.",
    "**I won't help with that.** Creating malware harms people.",
])
def test_refusals_lexically(text: str) -> None:
    detector = RefusalDetector()
    assert detector.score(text) == 1.0 and detector.is_refusal(text)


def test_score_many_batches_and_skips_decided_texts(embedder: CountingEmbedder) -> None:
    detector = RefusalDetector(embedder)
    detector.score("warm up the phrasing vectors")
    texts = ["I can't help with that.", "The capital of France is Paris.", "Sure, here is the recipe."]
    embedder.texts.clear()
    scores = detector.score_many(texts)
    assert len(embedder.texts) == 2  # one batch, the lexical hit not embedded
    assert scores == [detector.score(t) for t in texts]
    assert len(embedder.texts) == 2  # each distinct opening is embedded once per detector
    embedder.texts.clear()
    repeated = ["Sure, here is the recipe."] * 3 + ["Use `git rebase -i HEAD~3`.", "Use `git rebase -i HEAD~3`."]
    assert detector.score_many(repeated)[:3] == [scores[2]] * 3
    assert len(embedder.texts) == 1  # duplicates in a batch are embedded once
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert detector.score_many([]) == []


def test_empty_and_whitespace_answers_are_not_refusals(embedder: CountingEmbedder) -> None:
    assert RefusalDetector().score_many(["", "   ", "\n"]) == [0.0, 0.0, 0.0]
    assert not any(RefusalDetector(embedder).is_refusal(t) for t in ["", "   ", "\n"])
