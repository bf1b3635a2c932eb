"""EmbeddedStore bounds: entry count, payload bytes, TTL, LRU order."""

from __future__ import annotations

import numpy as np

from cache.stores import EmbeddedStore, Entry, Partition

P = Partition("t", "m", "c")


def unit(seed: int, dim: int = 8) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_lru_eviction_frees_vector_rows() -> None:
    store = EmbeddedStore(max_entries=3)
    await store.start(8)
    for i in range(3):
        await store.put(Entry(f"k{i}", b"v%d" % i, 60, unit(i), P))
    assert await store.get("k0") == b"v0"  # k0 is now most recent; k1 is the oldest
    await store.put(Entry("k3", b"v3", 60, unit(3), P))
    assert len(store) == 3 and await store.get("k1") is None
    found = await store.nearest(P, unit(3))
    assert found[0].payload == b"v3" and found[0].similarity > 0.999
    assert [c.payload for c in found] == [b"v3", *sorted({b"v0", b"v2"}, key=lambda p: -float(
        unit(int(p[1:])) @ unit(3)))]
    assert b"v1" not in [c.payload for c in await store.nearest(P, unit(1))]  # its row was freed
    for i in range(4, 40):  # rows are recycled, never grown
        await store.put(Entry(f"k{i}", b"x", 60, unit(i), P))
    assert len(store) == 3


async def test_byte_bound() -> None:
    store = EmbeddedStore(max_entries=100, max_bytes=100)
    await store.start(0)
    for i in range(10):
        await store.put(Entry(f"k{i}", b"x" * 40, 60))
    assert len(store) == 2
    await store.put(Entry("huge", b"x" * 101, 60))
    assert await store.get("huge") is None


async def test_ttl_and_partition_filter() -> None:
    clock = Clock()
    store = EmbeddedStore(max_entries=10, clock=clock)
    await store.start(8)
    await store.put(Entry("a", b"A", 10, unit(1), P, text="question"))
    assert (await store.nearest(P, unit(1)))[0].text == "question"
    assert await store.nearest(Partition("t", "m", "other"), unit(1)) == []
    assert await store.nearest(Partition("other", "m", "c"), unit(1)) == []
    clock.now += 11
    assert await store.nearest(P, unit(1)) == []
    assert await store.get("a") is None
