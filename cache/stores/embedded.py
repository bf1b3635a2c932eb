"""The in-process store: the default when no Redis URL is configured.

One LRU over all entries, bounded by count and by payload bytes, with a TTL per entry.
Vectors live in one preallocated float32 matrix (a row per semantic entry), so a lookup is
one mask over the partition column and one matrix-vector product, with no allocation
that grows with traffic. Measured at 10k entries in docs/cache.md.
All methods are synchronous under the hood and take well under a millisecond at the
default size, so they run inline on the event loop instead of paying a thread hop.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .base import Candidate, Entry, Partition


@dataclass
class _Item:
    payload: bytes
    expires_at: float
    row: int | None
    text: str


def _partition_id(partition: Partition) -> int:
    raw = f"{partition.tenant}|{partition.model}|{partition.context}".encode()
    return int.from_bytes(hashlib.sha256(raw).digest()[:8], "big") >> 1  # 63 bits, never -1


class EmbeddedStore:
    def __init__(
        self,
        max_entries: int = 10_000,
        max_bytes: int = 256 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._clock = clock
        self._items: OrderedDict[str, _Item] = OrderedDict()  # oldest first
        self._bytes = 0
        self._dim = 0
        self._matrix = np.zeros((0, 0), dtype=np.float32)
        self._row_partition = np.full(0, -1, dtype=np.int64)
        self._row_expires = np.zeros(0, dtype=np.float64)
        self._row_key: list[str | None] = []
        self._free_rows: list[int] = []

    @property
    def supports_vectors(self) -> bool:
        return self._dim > 0

    async def start(self, dim: int) -> None:
        self._dim = dim
        if dim:
            self._matrix = np.zeros((self._max_entries, dim), dtype=np.float32)
            self._row_partition = np.full(self._max_entries, -1, dtype=np.int64)
            self._row_expires = np.zeros(self._max_entries, dtype=np.float64)
            self._row_key = [None] * self._max_entries
            self._free_rows = list(range(self._max_entries - 1, -1, -1))

    def __len__(self) -> int:
        return len(self._items)

    async def get(self, key: str) -> bytes | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item.expires_at <= self._clock():
            self._remove(key)
            return None
        self._items.move_to_end(key)
        return item.payload

    async def nearest(self, partition: Partition, vector: np.ndarray, k: int = 3) -> list[Candidate]:
        if not self._dim:
            return []
        rows = np.flatnonzero(
            (self._row_partition == _partition_id(partition)) & (self._row_expires > self._clock())
        )
        if rows.size == 0:
            return []
        query = vector.astype(np.float32, copy=False)
        # Gathering many rows copies them; past ~1/4 of the matrix one full product is cheaper.
        sims = (self._matrix @ query)[rows] if rows.size * 4 >= len(self._matrix) else self._matrix[rows] @ query
        top = np.argpartition(-sims, k - 1)[:k] if sims.size > k else np.arange(sims.size)
        top = top[np.argsort(-sims[top])]
        found = []
        for i in top:
            key = self._row_key[int(rows[i])]
            assert key is not None
            item = self._items[key]
            found.append(Candidate(item.payload, float(sims[i]), item.text))
        if found:  # a semantic hit refreshes the entry's LRU position like a key hit does
            self._items.move_to_end(self._row_key[int(rows[top[0]])] or "")
        return found

    async def put(self, entry: Entry) -> None:
        if len(entry.payload) > self._max_bytes:
            return
        if entry.key in self._items:
            self._remove(entry.key)
        while self._items and (
            len(self._items) >= self._max_entries or self._bytes + len(entry.payload) > self._max_bytes
        ):
            self._remove(next(iter(self._items)))
        expires_at = self._clock() + entry.ttl_s
        row = None
        if self._dim and entry.vector is not None and entry.partition is not None and self._free_rows:
            row = self._free_rows.pop()
            self._matrix[row] = entry.vector
            self._row_partition[row] = _partition_id(entry.partition)
            self._row_expires[row] = expires_at
            self._row_key[row] = entry.key
        self._items[entry.key] = _Item(entry.payload, expires_at, row, entry.text)
        self._bytes += len(entry.payload)

    def _remove(self, key: str) -> None:
        item = self._items.pop(key)
        self._bytes -= len(item.payload)
        if item.row is not None:
            self._row_partition[item.row] = -1
            self._row_key[item.row] = None
            self._free_rows.append(item.row)

    async def aclose(self) -> None:
        self._items.clear()
        self._bytes = 0
