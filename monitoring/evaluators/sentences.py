"""An answer split into the sentences (claims) an evaluator scores one by one.

Rule-based, no model: split after `.`, `!`, `?` followed by a space and a capital letter,
digit or quote, and at line breaks and list bullets; not after common abbreviations
("e.g.", "Dr.", "St.", single initials) nor inside numbers ("3.1%"). Code blocks are dropped
(code is not a claim about the context). Fragments of fewer than three words ("Yes.",
"Sure!") carry no claim of their own and are left out.
"""

from __future__ import annotations

import re

_CODE = re.compile(r"```.*?(```|$)", re.DOTALL)
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+")
_ABBREVIATIONS = frozenset(
    "e.g i.e etc vs mr mrs ms dr prof st no fig approx inc ltd co jr sr dept est cf al".split())
_BOUNDARY = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[\"'(\[]?[A-Z0-9À-Ý])")
MIN_WORDS = 3


def _ends_with_abbreviation(text: str) -> bool:
    last = text.rstrip().rsplit(None, 1)[-1] if text.strip() else ""
    word = last.rstrip(".").lower().lstrip("(\"'")
    return word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha())


def split_sentences(text: str, *, min_words: int = MIN_WORDS) -> list[str]:
    """The answer's sentences, in order, stripped; short fragments left out."""
    text = _CODE.sub("\n", text)
    sentences: list[str] = []
    for line in text.splitlines():
        line = _BULLET.sub("", line).strip()
        if not line:
            continue
        start = 0
        pieces: list[str] = []
        for match in _BOUNDARY.finditer(line):
            candidate = line[start:match.start()]
            if _ends_with_abbreviation(candidate):
                continue
            pieces.append(line[start:match.end()].strip())
            start = match.end()
        pieces.append(line[start:].strip())
        sentences.extend(p for p in pieces if len(p.split()) >= min_words)
    return sentences
