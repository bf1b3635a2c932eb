"""Leave out of a resent batch the rows a previous collector already wrote.

A frame resent after a collector died may have been written in part before the kill;
both tables find out what is there their own way (request rows by ingest client and
sequence, spans by trace and owning server span) and share this last step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pyarrow as pa


def without_written(batch: pa.Table, picked: Iterable[tuple[int, Sequence[Any], Sequence[Any]]],
                    written: Callable[[Any, Any], bool]) -> tuple[pa.Table, list[int]]:
    """`batch` without the rows `written(a, b)` says are stored, where `picked` gives each
    resent range as (offset, its a values, its b values); returns the batch and how many
    rows of each range were left out."""
    keep = [True] * batch.num_rows
    removed = []
    for offset, firsts, seconds in picked:
        gone = 0
        for j, (a, b) in enumerate(zip(firsts, seconds, strict=True)):
            if written(a, b):
                keep[offset + j] = False
                gone += 1
        removed.append(gone)
    if any(removed):
        batch = batch.filter(pa.array(keep, type=pa.bool_()))
    return batch, removed
