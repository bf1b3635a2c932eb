"""Which language is a prompt or an answer in? For the monitor's language mix (language_js).

py3langid (a maintained fork of langid.py: naive Bayes over byte n-grams, its model bundled
in the wheel, no network, numpy only): on the labelled sample
monitoring/data/language_labelled.jsonl (94 prompts and answers, 17 languages, short ones
included) it gets 93 right at ~0.07 ms a text, after a one-time model load of ~0.5 s.
lingua (more accurate on very short text, but a large model and slower) and langdetect
(non-deterministic unless seeded, slower) are the usual alternatives; neither installs
from this machine's package index, and py3langid's measured accuracy leaves little to gain.

Code blocks, inline code and URLs are removed first (a Python snippet is not Icelandic).
A text with fewer than MIN_LETTERS letters left, or whose best language has a normalised
probability below MIN_CONFIDENCE, is "" (unknown): "ok" and "42" have no language, and a
window full of guesses would make the language mix drift at random.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Any

MIN_LETTERS = 3
MIN_CONFIDENCE = 0.3  # measured: correct labels >= 0.42 on the sample, "Yes."/"Danke" <= 0.1
# Only the first characters of prose are classified: langid's cost grows with the length
# (0.35 ms for 2,000 chars, 0.08 ms for 300) and a language shows long before; the monitor
# classifies ~50,000 sampled texts a run (bench/monitor_cost.py). The labelled sample is
# unchanged by the cut (all its texts are shorter).
DETECT_CHARS = 300

# py3langid labels without an ISO 639-1 code that belong to one that has one.
_TO_ISO_639_1 = {"arz": "ar", "ary": "ar", "yue": "zh", "wuu": "zh", "uzs": "uz"}

_CODE_BLOCK = re.compile(r"```.*?(?:```|$)", re.S)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_URL = re.compile(r"\b(?:https?://|www\.)\S+")


@functools.cache
def _identifier() -> Any:
    """The bundled model, loaded once per process (read-only afterwards, so threads may share it)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def _prose(text: str) -> str:
    return _URL.sub(" ", _INLINE_CODE.sub(" ", _CODE_BLOCK.sub(" ", text)))


def detect_language(text: str) -> str:
    """ISO 639-1 code ("en", "de", "zh", ...) of `text`, or "" when too short or unsure."""
    prose = _prose(text)[:DETECT_CHARS]
    if sum(map(str.isalpha, prose)) < MIN_LETTERS:
        return ""
    language, confidence = _identifier().classify(prose)
    if confidence < MIN_CONFIDENCE:
        return ""
    language = _TO_ISO_639_1.get(language, language)
    return language if len(language) == 2 else ""


def detect_many(texts: Iterable[str]) -> list[str]:
    return [detect_language(text) for text in texts]
