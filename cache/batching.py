"""Coalesce concurrent embedding calls into batches without adding latency.

The first caller starts a batch at once; callers arriving while it runs queue up and go
together in the next batch. An idle embedder therefore answers a lone request immediately,
and a busy one amortises the model call over everyone who waited.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class MicroBatcher(Generic[T]):
    def __init__(self, run_batch: Callable[[list[str]], Awaitable[list[T]]], max_batch: int) -> None:
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._pending: list[tuple[str, asyncio.Future[T]]] = []
        self._worker: asyncio.Task[None] | None = None

    async def submit(self, text: str) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((text, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain(), name="sluice-embed-batch")
        return await future

    async def _drain(self) -> None:
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            live = [(t, f) for t, f in batch if not f.done()]  # skip callers that gave up
            if not live:
                continue
            try:
                results = await self._run_batch([t for t, _ in live])
            except Exception as exc:  # noqa: BLE001 - handed to every waiter of this batch
                for _, future in live:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(live, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def aclose(self) -> None:
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        for _, future in self._pending:
            if not future.done():
                future.cancel()
        self._pending.clear()
