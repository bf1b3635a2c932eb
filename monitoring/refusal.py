"""Is this answer a refusal? For the monitor's refusal rate, not for any decision on a request.

Two signals over the *opening* of an answer (refusals announce themselves in the first
sentence or two; a long answer that says "you cannot use await here" in paragraph three is
an answer), with quoted speech removed first (a story's "I'm sorry, but I can't let you
in," he said, or an explanation of what refusals look like, is not one):

- lexical: regular expressions over normalised text (monitoring/data/refusal_patterns.txt),
  first-person declines in several languages. A decline followed by ", but" and an answer
  ("I can't see your screen, but the error means ...") is a caveat, not a refusal, unless
  what follows the "but" is an offer of something else ("but I can explain ...": a partial
  refusal, which counts).
- embedding: cosine similarity between the opening and the refusal phrasings
  (monitoring/data/refusal_phrasings.txt, >= 50 in several styles and languages) with the
  cache's local MiniLM embedder; it catches paraphrases no pattern lists ("I'll have to
  pass on this one"). Optional: without an embedder the detector is lexical only.

Precision and recall of both modes on the labelled set (monitoring/data/refusal_labelled.jsonl,
tuned on its dev half, measured on its held-out half) are in docs/monitoring.md.
"""

from __future__ import annotations

import asyncio
import functools
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

DATA_DIR = Path(__file__).parent / "data"
PHRASINGS_PATH = DATA_DIR / "refusal_phrasings.txt"
PATTERNS_PATH = DATA_DIR / "refusal_patterns.txt"

# Tuned on the dev half of the labelled set (docs/monitoring.md has the sweep).
SIMILARITY_FLOOR = 0.45   # cosine at or below: no embedding evidence (score 0)
SIMILARITY_CEIL = 0.75    # cosine at or above: full embedding evidence (score 1)
CAVEAT_SCORE = 0.3        # a decline followed by ", but <answer>"
THRESHOLD = 0.5           # is_refusal: score >= THRESHOLD

_OPENING_CHARS = 300
_MEMO_ENTRIES = 20_000   # openings are <= 300 chars: a few MB at most


class SyncEmbedder(Protocol):
    """What the detector needs of an embedder: cache.embedders.LocalEmbedder, once started."""

    def embed_sync(self, texts: list[str]) -> list[np.ndarray | None]: ...


@dataclass(frozen=True)
class Phrasing:
    style: str
    text: str


def load_phrasings(path: Path = PHRASINGS_PATH) -> list[Phrasing]:
    phrasings = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        style, sep, text = line.partition("|")
        if not sep or not text.strip():
            raise ValueError(f"{path}:{number}: expected 'style | phrasing', got {line!r}")
        phrasings.append(Phrasing(style.strip(), text.strip()))
    return phrasings


def load_patterns(path: Path = PATTERNS_PATH) -> list[re.Pattern[str]]:
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [re.compile(line) for line in lines if line and not line.startswith("#")]


_CONTRACTIONS = [
    (r"\bcan't\b", "cannot"), (r"\bcan not\b", "cannot"), (r"\bwon't\b", "will not"),
    (r"\bshan't\b", "shall not"), (r"n't\b", " not"), (r"\bi'm\b", "i am"), (r"\bi'd\b", "i would"),
    (r"\bi'll\b", "i will"), (r"\bi've\b", "i have"), (r"\b(it|that|this|there|what)'s\b", r"\1 is"),
    (r"\blet's\b", "let us"),
]
_CONTRACTION_RES = [(re.compile(p), r) for p, r in _CONTRACTIONS]
_QUOTED = re.compile(r'"[^"\n]{0,400}"|“[^”\n]{0,400}”|«[^»\n]{0,400}»|„[^“”\n]{0,400}[“”]')
_SENTENCE_END = re.compile(r"(?<=[.!?。])\s+|\n+")


def normalise(text: str) -> str:
    """Lower case, NFKC, straight apostrophes, contractions expanded, punctuation -> space."""
    text = unicodedata.normalize("NFKC", text).lower().replace("\u2019", "'").replace("\u2018", "'")
    for pattern, replacement in _CONTRACTION_RES:
        text = pattern.sub(replacement, text)
    text = re.sub(r"[^\w\s]", " ", text)
    return " ".join(text.split())


def opening(text: str, max_chars: int = _OPENING_CHARS) -> str:
    """The first two sentences (at most max_chars), with quoted speech and code fences removed.
    Works on the head of the text only (4 x max_chars: room for a fence or a quote to drop),
    so a long answer costs what a short one does."""
    text = text[:max_chars * 4]
    text = re.sub(r"```.*?(```|$)", " ", text, flags=re.S)
    text = _QUOTED.sub(" ", unicodedata.normalize("NFKC", text))
    sentences = [s.strip(" \t*#>-") for s in _SENTENCE_END.split(text.strip()) if s.strip(" \t*#>-")]
    return " ".join(sentences[:2])[:max_chars]


# After a decline, ", but" introduces either an offer (partial refusal) or the answer (a caveat).
_BUT = re.compile(r"\b(?:but|however|though)\b (.*)$")
_OFFER = re.compile(r"^(?:i |here is a |here are some |we can |you could |you can try |let us |if you )")


@functools.lru_cache(maxsize=8)
def _any_of(sources: tuple[str, ...]) -> re.Pattern[str] | None:
    """All patterns as one alternation: one search tells a clause no pattern matches (almost
    every clause of almost every answer) instead of forty. None if they do not combine."""
    try:
        return re.compile("|".join(f"(?:{source})" for source in sources))
    except re.error:
        return None


def lexical_score(text: str, patterns: Sequence[re.Pattern[str]]) -> float:
    """1.0 for a decline in the opening, CAVEAT_SCORE for a decline followed by an answer, else 0."""
    best = 0.0
    gate = _any_of(tuple(p.pattern for p in patterns))
    for sentence in _SENTENCE_END.split(opening(text)):
        clause = normalise(sentence)
        if gate is not None and gate.search(clause) is None:
            continue
        for pattern in patterns:
            match = pattern.search(clause)
            if match is None:
                continue
            after = _BUT.search(clause[match.end():])
            if after is None or _OFFER.match(after.group(1)):
                return 1.0
            best = CAVEAT_SCORE
    return best


def similarity_score(similarity: float) -> float:
    """Cosine to the nearest phrasing -> [0, 1], a linear ramp between the tuned floor and ceiling."""
    return float(min(max((similarity - SIMILARITY_FLOOR) / (SIMILARITY_CEIL - SIMILARITY_FLOOR), 0.0), 1.0))


class RefusalDetector:
    """score(text) in [0, 1]; is_refusal(text) = score >= threshold.

    The score is the lexical score when it is decisive (1.0), otherwise the larger of the
    lexical score and the embedding score, except that a caveat (a decline followed by an
    answer) is capped below the threshold: the embedding cannot tell "I can't see your
    screen, but ..." from a refusal, the "but" can. `embedder` is anything with
    `embed_sync(texts)` (a started cache.embedders.LocalEmbedder); blocking: call from a
    worker thread, never the event loop.
    """

    def __init__(self, embedder: SyncEmbedder | None = None, *, threshold: float = THRESHOLD,
                 phrasings: Sequence[Phrasing] | None = None,
                 patterns: Sequence[re.Pattern[str]] | None = None) -> None:
        self.threshold = threshold
        self.phrasings = list(phrasings) if phrasings is not None else load_phrasings()
        self.patterns = list(patterns) if patterns is not None else load_patterns()
        self._embedder = embedder
        self._phrasing_matrix: np.ndarray | None = None
        self._similarity_memo: dict[str, float] = {}

    @classmethod
    def with_local_embedder(cls, models_dir: Path, **options: object) -> RefusalDetector:
        """A detector with the cache's local MiniLM (ONNX, int8), loaded now (seconds, blocking)."""
        from cache.embedders import LocalEmbedder

        embedder = LocalEmbedder(models_dir)
        asyncio.run(embedder.start())  # loads the session in its worker thread; no loop outlives it
        return cls(embedder, **options)  # type: ignore[arg-type]

    def _phrasing_vectors(self) -> np.ndarray:
        if self._phrasing_matrix is None:
            assert self._embedder is not None
            vectors = self._embedder.embed_sync([p.text for p in self.phrasings])
            self._phrasing_matrix = np.vstack([v for v in vectors if v is not None])
        return self._phrasing_matrix

    def similarities(self, texts: Sequence[str]) -> list[float]:
        """Max cosine between each text's opening and any phrasing (0.0 without an embedder).

        Each distinct opening is embedded once per detector: answers repeat (canned
        replies, a scripted upstream, the overlapping windows of consecutive runs), and the
        model is the whole cost. The memo is bounded; when full it starts over.
        """
        if self._embedder is None or not texts:
            return [0.0] * len(texts)
        openings = [opening(t) or " " for t in texts]
        missing = list(dict.fromkeys(o for o in openings if o not in self._similarity_memo))
        if missing:
            phrasings = self._phrasing_vectors()
            if len(self._similarity_memo) + len(missing) > _MEMO_ENTRIES:
                self._similarity_memo.clear()
            for text, vector in zip(missing, self._embedder.embed_sync(missing), strict=True):
                self._similarity_memo[text] = float((phrasings @ vector).max()) if vector is not None else 0.0
        return [self._similarity_memo[o] for o in openings]

    def score_many(self, texts: Sequence[str]) -> list[float]:
        lexical = [lexical_score(t, self.patterns) for t in texts]
        undecided = [i for i, s in enumerate(lexical) if s < 1.0]  # decisive lexical hits skip the model
        scores = list(lexical)
        for i, similarity in zip(undecided, self.similarities([texts[i] for i in undecided]), strict=True):
            embedded = similarity_score(similarity)
            if lexical[i] == CAVEAT_SCORE:
                embedded = min(embedded, self.threshold - 0.01)
            scores[i] = max(lexical[i], embedded)
        return scores

    def score(self, text: str) -> float:
        return self.score_many([text])[0]

    def is_refusal(self, text: str) -> bool:
        return self.score(text) >= self.threshold
