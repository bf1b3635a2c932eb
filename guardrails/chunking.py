"""Cutting long texts into overlapping chunks, so no scan is one long call.

Presidio's cost in one call grows with (values found x tokens): a 100 KB prompt dense
with e-mail addresses and phone numbers took about a minute in one call and about
2.6 s in 2,000-character chunks (docs/guardrails.md). Chunks are also where a scan
can stop (its request stopped waiting) or give way to another tenant's work.

Consecutive chunks overlap by `overlap` characters and the middle of each overlap
divides the text between them: a finding belongs to the chunk its start offset falls
in (`own_start <= start < own_end`). So a value up to ``overlap // 2`` characters long
is seen whole by the chunk that owns it, and has at least ``overlap // 2`` characters
of context before it there (Presidio's context words look a few words back). Each
offset is owned by exactly one chunk, so a value is never counted twice.
"""

from __future__ import annotations

from dataclasses import dataclass

_SPACES = (" ", "\n", "\t", "\r")


@dataclass(frozen=True, slots=True)
class Chunk:
    start: int       # analyse text[start:end]
    end: int
    own_start: int   # findings starting in [own_start, own_end) belong to this chunk
    own_end: int


def chunk_spans(text: str, size: int, overlap: int) -> list[Chunk]:
    """Chunks of at most `size` characters, cut after a whitespace when there is one
    in the second half of the chunk; `overlap` must be under ``size // 2``."""
    n = len(text)
    if n <= size:
        return [Chunk(0, n, 0, n)]
    bounds: list[tuple[int, int]] = []
    start = 0
    while True:
        end = start + size
        if end >= n:
            bounds.append((start, n))
            break
        cut = _after_last_space(text, start + size // 2, end)
        end = cut if cut != -1 else end
        bounds.append((start, end))
        start = end - overlap
    chunks = []
    own_start = 0
    for i, (start, end) in enumerate(bounds):
        own_end = (bounds[i + 1][0] + end) // 2 if i + 1 < len(bounds) else n
        chunks.append(Chunk(start, end, own_start, own_end))
        own_start = own_end
    return chunks


def _after_last_space(text: str, lo: int, hi: int) -> int:
    found = max(text.rfind(space, lo, hi) for space in _SPACES)
    return found + 1 if found != -1 else -1


def prefix_lengths(texts: list[str], limit: int) -> list[int]:
    """How many leading characters of each text fit in `limit` characters in all,
    taken in order (the `scan_prefix` overflow policy)."""
    left = limit
    out = []
    for text in texts:
        take = min(len(text), left)
        out.append(take)
        left -= take
    return out
