"""A lexical check on semantic hits, where sentence embeddings are known to be blind.

Measured on bench/data/paraphrase_pairs.jsonl (docs/cache.md): MiniLM puts "reasons to
learn Rust" / "reasons not to learn Rust" at cosine 0.97 and "a 5 kg parcel" / "a 20 kg
parcel" at 0.96, above any threshold that still catches real paraphrases. A wrong cached
answer is worse than a miss, so a semantic hit also requires both prompts to carry
the same numbers, the same calendar words and the same negations (explicit ones, and
prefix negation such as safe/unsafe). Lexical antonyms (good/bad, ascending/descending) are
not caught: see the table in docs/cache.md for what that leaves.
The check costs microseconds and only ever turns a hit into a miss.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_NEGATIONS = frozenset(
    {"not", "no", "never", "none", "nor", "neither", "nothing", "nobody", "nowhere", "cannot", "without",
     "against", "avoid", "except", "unless"}
)
_CALENDAR = frozenset(
    {"monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday",
     "january", "february", "march", "april", "may", "june", "july", "august", "september",
     "october", "november", "december", "today", "tomorrow", "yesterday", "tonight", "weekend",
     "morning", "afternoon", "evening", "night"}
)
_NUMBER_WORDS = frozenset(
    {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
     "twelve", "twenty", "thirty", "forty", "fifty", "hundred", "thousand", "million", "billion",
     "first", "second", "third", "fourth", "fifth", "half", "quarter", "double", "triple", "once", "twice"}
)


def _markers(text: str) -> tuple[frozenset[str], int]:
    """(numbers + calendar words, number of negations) of `text`."""
    facts: set[str] = set()
    negations = 0
    for word in _WORD.findall(text.lower()):
        if word.endswith("n't"):
            negations += 1
        elif word in _NEGATIONS:
            negations += 1
        elif word[0].isdigit() or word in _NUMBER_WORDS or word in _CALENDAR:
            facts.add(word)
    return frozenset(facts), negations


_NEGATING_PREFIXES = ("un", "dis", "non", "in", "im", "ir", "il")


def _prefix_negated(a: set[str], b: set[str]) -> bool:
    """A word in one prompt is a prefix-negated word of the other: safe/unsafe, like/dislike."""
    for word in a:
        for other in b:
            longer, shorter = (word, other) if len(word) > len(other) else (other, word)
            if len(shorter) >= 3 and any(longer == p + shorter for p in _NEGATING_PREFIXES):
                return True
    return False


def same_facts(query: str, cached: str) -> bool:
    """False when the two prompts differ in numbers, dates/days or negation."""
    if _markers(query) != _markers(cached):
        return False
    q, c = set(_WORD.findall(query.lower())), set(_WORD.findall(cached.lower()))
    return not _prefix_negated(q - c, c - q)
