"""The limiter every replica shares: state in Redis, one script call per decision.

A request costs one EVALSHA on its path (reserve). Its settlement waits in a per-subject
queue for `settle_interval_s` and leaves with every other settlement for the same
subjects in one EVALSHA, written after the answer was sent; nothing waits for its reply.
The command heads (script, key names) are encoded once per subject set and reused.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from gateway.quota.limiter import LimiterUnavailable
from gateway.quota.model import Decision, Estimate, Reservation, SubjectSet, SubjectState
from gateway.quota.resp import RespClient, RespError, RespUnavailable, bulk, encode
from gateway.quota.scripts import PEEK, RESERVE, SETTLE, sha1

log = logging.getLogger("sluice.quota")
_SETTLE_BATCH = 256                  # settlements per call at most


def subject_keys(prefix: str, kind: str, ident: str, tenant: str) -> tuple[bytes, bytes]:
    """The subject's two Redis keys (scripts.py draws them); `{tenant}` is the hash tag."""
    base = f"{prefix}q:{{{tenant}}}:" + ("t:" if kind == "tenant" else f"k:{ident}:")
    return (base + "st").encode(), (base + "fl").encode()


class _Heads:
    """A subject set's encoded command heads: EVALSHA <sha> <numkeys> <keys...>."""

    __slots__ = ("keys", "reserve", "settle", "codes")

    def __init__(self, prefix: str, subjects: SubjectSet, window_ms: int) -> None:
        keys: list[bytes] = []
        for s in subjects.subjects:
            keys += subject_keys(prefix, s.kind, s.ident, s.tenant)
        self.keys = keys
        self.reserve = _head(b"EVALSHA", _SHA[RESERVE], keys, 1)
        self.settle = _head(b"EVALSHA", _SHA[SETTLE], keys, 2)
        leased = (f"{s.spec.period_code},{1 if s.spec.max_parallel or s.spec.budget_usd else 0}"
                  for s in subjects.subjects)
        self.codes = bulk(f"{window_ms},{','.join(leased)}".encode())


_SHA = {script: sha1(script).encode() for script in (RESERVE, SETTLE, PEEK)}


def _head(verb: bytes, script: bytes, keys: list[bytes], nargs: int) -> bytes:
    parts = [b"*%d\r\n" % (3 + len(keys) + nargs), bulk(verb), bulk(script), bulk(str(len(keys)).encode())]
    parts += [bulk(k) for k in keys]
    return b"".join(parts)


class RedisLimiter:
    shared = True

    def __init__(self, url: str, description: str, *, prefix: str, window_s: float, lease_s: float,
                 timeout_s: float, retry_after_s: float, settle_interval_s: float,
                 on_settle_dropped: Callable[[int], None] | None = None) -> None:
        self.description = description
        self._client = RespClient(url, timeout_s=timeout_s, retry_after_s=retry_after_s)
        self._prefix = prefix
        self._window_ms = round(window_s * 1000)
        self._lease_ms = round(lease_s * 1000)
        self._common = f"{self._window_ms},{self._lease_ms},"
        self._settle_interval_s = settle_interval_s
        self._pending: dict[SubjectSet, list[str]] = {}
        self._flush_handle: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()
        self._on_settle_dropped = on_settle_dropped or (lambda n: None)

    @property
    def client(self) -> RespClient:
        return self._client

    async def start(self) -> None:
        """Load the scripts (a Redis that is down now is tried again on the first request)."""
        try:
            for script in (RESERVE, SETTLE, PEEK):
                reply = await self._client.call(encode(b"SCRIPT", b"LOAD", script.encode()))
                if isinstance(reply, RespError):
                    raise RuntimeError(f"Redis refused the limiter's script: {reply}")
        except RespUnavailable as exc:
            log.warning("limits: Redis (%s) unavailable at start (%s); the fail modes decide until it answers",
                        self.description, exc)

    async def aclose(self) -> None:
        self._flush()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2.0)
        await asyncio.sleep(0)
        await self._client.aclose()

    # -- the request path --------------------------------------------------------------

    async def reserve(self, subjects: SubjectSet, request_id: str, estimate: Estimate) -> Decision:
        heads = subjects.cache
        if heads is None:
            heads = subjects.cache = _Heads(self._prefix, subjects, self._window_ms)
        argv = f"{self._common}{request_id},{estimate.tokens},{estimate.nano_usd},{subjects.args}".encode()
        try:
            reply = await self._client.call(heads.reserve + bulk(argv))
            if isinstance(reply, RespError) and reply.noscript:     # Redis restarted empty: EVAL loads it
                reply = await self._client.call(_head(b"EVAL", RESERVE.encode(), heads.keys, 1) + bulk(argv))
        except RespUnavailable as exc:
            raise LimiterUnavailable(str(exc)) from None
        if not isinstance(reply, bytes):
            raise LimiterUnavailable(f"unexpected reply to the reserve script: {reply!r}"[:200])
        return Decision(list(map(int, reply.split(b","))), len(subjects.subjects))

    def settle(self, reservation: Reservation, tokens: int, nano_usd: int) -> None:
        est = reservation.estimate
        item = f"{reservation.request_id},{reservation.at_ms},{est.tokens},{tokens},{est.nano_usd},{nano_usd}"
        queue = self._pending.get(reservation.subjects)
        if queue is None:
            self._pending[reservation.subjects] = [item]
        else:
            queue.append(item)
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(self._settle_interval_s, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        pending, self._pending = self._pending, {}
        for subjects, items in pending.items():
            heads: _Heads = subjects.cache
            for i in range(0, len(items), _SETTLE_BATCH):
                chunk = items[i:i + _SETTLE_BATCH]
                argv = bulk(";".join(chunk).encode())
                command = heads.settle + argv + heads.codes
                if not self._client.send(command, self._settled(heads, argv, len(chunk))):
                    self._later(self._send_when_connected(heads, argv, len(chunk)))

    def _settled(self, heads: _Heads, argv: bytes, count: int):
        def on_reply(reply: object) -> None:
            if isinstance(reply, RespError) and reply.noscript:
                command = _head(b"EVAL", SETTLE.encode(), heads.keys, 2) + argv + heads.codes
                if self._client.send(command, self._settled(heads, argv, count)):
                    return
            if isinstance(reply, Exception):
                self._on_settle_dropped(count)
        return on_reply

    async def _send_when_connected(self, heads: _Heads, argv: bytes, count: int) -> None:
        try:
            await self._client.ensure_connected()
        except RespUnavailable:
            self._on_settle_dropped(count)       # Redis is down: its state is stale anyway
            return
        if not self._client.send(heads.settle + argv + heads.codes, self._settled(heads, argv, count)):
            self._on_settle_dropped(count)

    def _later(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the admin API -------------------------------------------------------------------

    async def peek(self, subjects: SubjectSet) -> tuple[int, list[SubjectState]]:
        heads = subjects.cache
        if heads is None:
            heads = subjects.cache = _Heads(self._prefix, subjects, self._window_ms)
        argv = bulk((f"{self._window_ms}," + ",".join(str(s.spec.period_code) for s in subjects.subjects)).encode())
        try:
            reply = await self._client.call(_head(b"EVALSHA", _SHA[PEEK], heads.keys, 1) + argv)
            if isinstance(reply, RespError) and reply.noscript:
                reply = await self._client.call(_head(b"EVAL", PEEK.encode(), heads.keys, 1) + argv)
        except RespUnavailable as exc:
            raise LimiterUnavailable(str(exc)) from None
        if not isinstance(reply, bytes):
            raise LimiterUnavailable(f"unexpected reply to the peek script: {reply!r}"[:200])
        values = [int(v) for v in reply.split(b",")]
        return values[0], [SubjectState(*values[1 + 8 * i:9 + 8 * i]) for i in range(len(subjects.subjects))]
