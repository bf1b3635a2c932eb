"""Lexical checks of one answer sentence against its context: what an embedding misses.

Sentence embeddings place "Lake Baikal reaches 1,642 metres" and "... 1,246 metres" side by
side (cosine ~0.97), and "is" next to "is not"; the grounding evaluator's cheap backend
therefore also checks, word by word:

- numbers: every number of the sentence (digits, thousands separators and decimals
  normalised; "two" = 2 up to twenty) must occur in the context;
- names: every capitalised word that does not open the sentence (people, places, products,
  labels such as "5W-30") must occur in the context, case-insensitively;
- negation and opposites: each clause of the sentence is paired with the context clause
  sharing most of its content words; the two must both carry a negation cue (not, no,
  never, cannot, n't, without, none, ...) or neither, and the sentence's clause must not
  use the opposite of a word of its pair ("higher" for "lower", "keeps" for "removed",
  `OPPOSITES`) that the pair does not use itself;
- coverage: the share of the sentence's content words (stop words out, crude stemming)
  found in the context: a claim the context never mentions has few of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_NUMBER = re.compile(r"(?<![\w.])[-+]?\d[\d,]*(?:\.\d+)?")
_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty".split())}
_NUMBER_WORDS.update({"thirty": "30", "forty": "40", "fifty": "50", "hundred": "100", "twice": "2"})
del _NUMBER_WORDS["one"]          # "one of the moons", "only one": mostly not a figure
_WORD = re.compile(r"(?<![\w'’-])[A-Za-zÀ-ÿ][\w'’-]*")
_NEGATION = re.compile(
    r"\b(?:not|no|never|none|nothing|nobody|neither|nor|cannot|without|isn't|aren't|wasn't|weren't|"
    r"doesn't|don't|didn't|can't|won't|shouldn't|couldn't|mustn't|hasn't|haven't|n't)\b", re.IGNORECASE)
STOP_WORDS = frozenset("""a an the and or but if of to in on at by for with from as is are was were be been being it its
this that these those there here you your we our they their he she his her i me my can may might will would should
could must do does did has have had not no yes so than then also only just about into over under up down out
all any each every some such which who whom what when where why how more most less very per a.m p.m""".split())
_TITLE_STOP = frozenset({"I", "The", "A", "An", "It", "Yes", "No", "However", "Note", "This", "That", "These",
                         "Those", "There", "They", "You", "Your", "We", "If", "In", "On", "At", "For", "And", "But"})


_PAIRS = """higher lower|more less|increase decrease|raise lower|raised lowered|before after|above below|always never|
longer shorter|faster slower|larger smaller|bigger smaller|minimum maximum|keep remove|keeps removed|add remove|
added removed|allowed forbidden|included excluded|mandatory optional|required optional|free paid|first last|
inside outside|open closed|on off|early late|warmer colder|hot cold|increases decreases|rises falls|buy sell|
accept reject|accepted rejected|win lose|male female|north south|east west|upwards downwards|deepest shallowest|
lighter heavier|cheaper dearer|safe unsafe|active dormant|consumer seller|covered excluded|covers excludes"""
OPPOSITES: dict[str, set[str]] = {}
for _pair in _PAIRS.replace("\n", "").split("|"):
    _a, _b = _pair.split()
    OPPOSITES.setdefault(_a, set()).add(_b)
    OPPOSITES.setdefault(_b, set()).add(_a)
_CLAUSE = re.compile(r"[,;:]\s+|\s+(?:while|whereas|but|although|though|and then)\s+", re.IGNORECASE)


def clauses(text: str) -> list[str]:
    return [c for c in _CLAUSE.split(text) if c and len(c.split()) >= 2] or [text]


def numbers(text: str) -> set[str]:
    found = set()
    for match in _NUMBER.finditer(text):
        value = match.group(0).replace(",", "").lstrip("+")
        if "." in value:
            value = value.rstrip("0").rstrip(".")
        found.add(value)
    for word in _WORD.findall(text.lower()):
        if word in _NUMBER_WORDS:
            found.add(_NUMBER_WORDS[word])
    return found


def names(sentence: str) -> list[str]:
    """Capitalised words past the first (and tokens mixing digits and capitals, e.g. 0W-20)."""
    words = [re.sub(r"['’]s?$", "", w) for w in _WORD.findall(sentence)]      # possessives: Jupiter's
    found = [w for i, w in enumerate(words) if i > 0 and w and w[0].isupper() and w not in _TITLE_STOP]
    found += re.findall(r"\b\d+[A-Z][\w-]*\b", sentence)
    return found


def _words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text)}


def has_negation(text: str) -> bool:
    return _NEGATION.search(text) is not None


def stem(word: str) -> str:
    word = word.lower().strip("'’")
    for suffix in ("ing", "ies", "ed", "es", "ly", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def content_stems(text: str) -> set[str]:
    return {stem(w) for w in _WORD.findall(text) if w.lower() not in STOP_WORDS and len(w) > 2}


@dataclass(slots=True)
class LexicalFindings:
    unsupported_numbers: list[str] = field(default_factory=list)
    unsupported_names: list[str] = field(default_factory=list)
    negation_mismatch: bool = False
    opposites: list[str] = field(default_factory=list)
    coverage: float = 1.0

    def problems(self) -> list[str]:
        out = []
        if self.unsupported_numbers:
            out.append("numbers not in the context: " + ", ".join(self.unsupported_numbers))
        if self.unsupported_names:
            out.append("names not in the context: " + ", ".join(self.unsupported_names))
        if self.negation_mismatch:
            out.append("negation differs from the closest context clause")
        if self.opposites:
            out.append("opposite of the context: " + ", ".join(self.opposites))
        return out


class ContextIndex:
    """The context, prepared once for the lexical checks of all of an answer's sentences."""

    def __init__(self, context: str) -> None:
        self.text = context
        self.lower = context.lower()
        self.numbers = numbers(context)
        self.stems = content_stems(context)
        from monitoring.evaluators.sentences import split_sentences
        self.clauses = [(c, content_stems(c), has_negation(c), _words(c))
                        for s in split_sentences(context, min_words=1) or [context] for c in clauses(s)]

    def check(self, sentence: str, closest: str) -> LexicalFindings:
        found = LexicalFindings()
        found.unsupported_numbers = sorted(numbers(sentence) - self.numbers)
        found.unsupported_names = [n for n in dict.fromkeys(names(sentence))
                                   if not re.search(rf"(?<!\w){re.escape(n.lower())}(?!\w)", self.lower)]
        for clause in clauses(sentence):
            stems = content_stems(clause)
            if not stems:
                continue
            best = max(self.clauses, key=lambda c: (len(stems & c[1]), len(stems & c[1]) / len(stems | c[1])))
            if len(stems & best[1]) < 2:
                continue                   # nothing in the context is about this clause
            if has_negation(clause) != best[2]:
                found.negation_mismatch = True
            words = _words(clause)
            found.opposites += [w for w in words if OPPOSITES.get(w, set()) & best[3] and w not in best[3]]
        stems = content_stems(sentence)
        found.coverage = len(stems & self.stems) / len(stems) if stems else 1.0
        return found
