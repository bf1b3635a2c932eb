"""The contract every cache backend implements.

Payloads are opaque bytes (the serialised response); vectors are unit-norm float32. A
backend never applies the similarity threshold: it returns the nearest entry inside the
partition and its cosine similarity, and the cache decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


class StoreUnavailable(Exception):
    """The backend cannot answer now (e.g. Redis down). The cache fails open on it."""


@dataclass(frozen=True)
class Partition:
    """Hard filters for a semantic lookup: a hit must match all three exactly."""

    tenant: str
    model: str
    context: str


@dataclass(frozen=True)
class Entry:
    key: str
    payload: bytes
    ttl_s: int
    vector: np.ndarray | None = None  # with `partition`: also searchable by similarity
    partition: Partition | None = None
    text: str = ""  # the embedded prompt text, for the lexical check on semantic hits (guard.py)


@dataclass(frozen=True)
class Candidate:
    payload: bytes
    similarity: float
    text: str


class CacheStore(Protocol):
    @property
    def supports_vectors(self) -> bool: ...

    async def start(self, dim: int) -> None:
        """Prepare storage for `dim`-sized vectors (0: exact entries only)."""

    async def get(self, key: str) -> bytes | None: ...

    async def nearest(self, partition: Partition, vector: np.ndarray, k: int = 3) -> list[Candidate]:
        """Up to k entries of `partition`, most similar first."""

    async def put(self, entry: Entry) -> None: ...

    async def aclose(self) -> None: ...
