"""Time to first token under load: wrk only sees whole responses, so while it drives a
streaming target a probe sends sequential streamed requests of its own (one extra
connection, same body) and times the first content-bearing SSE event of each.

The probe runs its own event loop in a thread of its own, so it works next to either
load generator (wrk is a subprocess; the Python generator owns the main thread's loop).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
import orjson

from bench.loadgen import UNIQUE_MARKER, percentile


@dataclass(frozen=True)
class TtftResult:
    samples: int  # streams that delivered content
    p50_ms: float
    p99_ms: float
    errors: int  # non-200 answers, transport errors, streams without content


def has_content(event: bytes) -> bool:
    """Whether one SSE `data:` line of a chat completion stream carries output: text or
    tool-call arguments (the role-only opening chunk and the usage chunk do not)."""
    if not event.startswith(b"data:"):
        return False
    payload = event[5:].strip()
    if not payload or payload == b"[DONE]":
        return False
    try:
        chunk = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return False
    choices = chunk.get("choices") if isinstance(chunk, dict) else None
    for choice in choices or ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict) and (delta.get("content") or delta.get("tool_calls")):
            return True
    return False


class TtftProbe:
    """Sequential streamed requests until `duration` seconds after `start()`.

        probe = TtftProbe(url, body, headers, duration)
        probe.start()
        ...drive the load...
        result = probe.join()

    A request already sent when the window closes still finishes (and counts); none is
    started after it.
    """

    def __init__(self, url: str, body: bytes, headers: Mapping[str, str], duration: float,
                 timeout: float = 30.0) -> None:
        self._url = url
        self._body = body
        self._headers = dict(headers)
        self._duration = duration
        self._timeout = timeout
        self._ttfts: list[float] = []
        self._errors = 0
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="ttft-probe", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self) -> TtftResult:
        self._thread.join(self._duration + self._timeout + 5)
        if self._thread.is_alive():
            raise RuntimeError("TTFT probe did not finish")
        if self._failure is not None:
            raise RuntimeError(f"TTFT probe failed: {self._failure!r}") from self._failure
        ordered = sorted(self._ttfts)
        return TtftResult(len(ordered), percentile(ordered, 50) * 1e3, percentile(ordered, 99) * 1e3, self._errors)

    def _run(self) -> None:
        try:
            asyncio.run(self._probe())
        except BaseException as error:  # reported by join(), in the caller's thread
            self._failure = error

    async def _probe(self) -> None:
        deadline = time.perf_counter() + self._duration
        parts = self._body.partition(UNIQUE_MARKER.encode())
        nonce = os.urandom(4).hex()
        connector = aiohttp.TCPConnector(limit=1)
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=self._headers) as session:
            count = 0
            while time.perf_counter() < deadline:
                count += 1
                # unique prompts stay unique (a cache must not answer the probe either)
                body = parts[0] + f"probe-{nonce}-{count}".encode() + parts[2] if parts[1] else self._body
                ttft = await self._one(session, body)
                if ttft is None:
                    self._errors += 1
                else:
                    self._ttfts.append(ttft)

    async def _one(self, session: aiohttp.ClientSession, body: bytes) -> float | None:
        """Seconds to the first content event of one stream; None if it failed or had none."""
        sent = time.perf_counter()
        try:
            async with session.post(self._url, data=body) as response:
                if response.status != 200:
                    await response.read()
                    return None
                async for line in response.content:
                    if has_content(line):
                        first = time.perf_counter() - sent
                        await response.read()  # drain: the connection is reused
                        return first
        except (aiohttp.ClientError, TimeoutError):
            return None
        return None
