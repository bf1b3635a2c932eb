"""The limiter every replica shares: state in Redis, one script call per decision.

A request costs one EVALSHA on its path (reserve), shared with the requests of the same
key and tenant that reach this replica in the same event-loop turn: they join one
command, written with the turn's other commands, and the script decides each in turn.
While a reserve call is on its way, the next requests gather behind it and leave together
when it is answered (one call in flight, as a database groups its commits): under load the
batches grow, so Redis and the gateway pay per batch what they used to pay per request,
and an idle gateway still sends a lone request at once.

Settlements wait for `settle_interval_s`, summed per subject set by lease bucket and rate
bucket, and leave in one EVALSHA per subject set, written after the answers were sent;
nothing waits for their reply. The command heads (script, key names, fixed arguments) are
encoded once per subject set and reused."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from gateway.quota.limiter import LimiterUnavailable
from gateway.quota.model import TOKENS, Decision, Estimate, Reservation, SubjectSet, SubjectState
from gateway.quota.resp import RespClient, RespError, RespUnavailable, bulk, encode
from gateway.quota.scripts import PEEK, RESERVE, SETTLE, sha1

log = logging.getLogger("sluice.quota")
_RESERVE_BATCH = 64                  # reserves per call at most


def subject_key(prefix: str, kind: str, ident: str, tenant: str) -> bytes:
    """The subject's Redis hash (scripts.py draws it); `{tenant}` is the hash tag."""
    return (f"{prefix}q:{{{tenant}}}:" + ("t:" if kind == "tenant" else f"k:{ident}:") + "st").encode()


class _Heads:
    """A subject set's encoded command parts: EVALSHA <sha> <numkeys> <keys...> and the
    arguments that do not change from call to call."""

    __slots__ = ("keys", "reserve", "reserve_args", "leased", "settle", "codes", "peek")

    def __init__(self, prefix: str, subjects: SubjectSet, window_ms: int, lease_ms: int) -> None:
        specs = [s.spec for s in subjects.subjects]
        self.keys = [subject_key(prefix, s.kind, s.ident, s.tenant) for s in subjects.subjects]
        self.reserve = _head(b"EVALSHA", _SHA[RESERVE], self.keys, _reserve_nargs(len(specs)))
        self.reserve_args = b"".join(bulk(str(v).encode()) for v in [window_ms, lease_ms, *(
            x for spec in specs for x in (spec.rpm, spec.tpm, spec.max_parallel, spec.budget_nano, spec.period_code))])
        self.leased = tuple(bool(spec.max_parallel or spec.budget_usd) for spec in specs)
        self.settle = _head(b"EVALSHA", _SHA[SETTLE], self.keys, 3)
        self.codes = bulk(",".join(str(v) for v in [window_ms, lease_ms, *(
            x for spec, held in zip(specs, self.leased) for x in (spec.period_code, int(held)))]).encode())
        self.peek = bulk(",".join(str(v) for v in [window_ms, lease_ms, *(s.period_code for s in specs)]).encode())


_SHA = {script: sha1(script).encode() for script in (RESERVE, SETTLE, PEEK)}
_NO_SETTLEMENTS = bulk(b"") * 3


def _reserve_nargs(subjects: int) -> int:
    """window, lease, five per subject, the requests, three for settlements riding along."""
    return 2 + 5 * subjects + 1 + 3


def _head(verb: bytes, script: bytes, keys: list[bytes], nargs: int) -> bytes:
    parts = [b"*%d\r\n" % (3 + len(keys) + nargs), bulk(verb), bulk(script), bulk(str(len(keys)).encode())]
    parts += [bulk(k) for k in keys]
    return b"".join(parts)


class _ReserveBatch:
    """The reserves of one subject set that arrive in the same event-loop turn: one
    EVALSHA carrying all of them, written with the turn's other commands. The script
    decides each request in turn against the state the earlier ones left (as separate
    calls would), atomically; requests join until the batch is written (`wire`).

    The script answers the subjects' counters before the batch and each request's
    outcome; each request's counters (its headers) are replayed here from its
    estimate, the way the script counted them, so Redis formats no numbers per request.
    """

    __slots__ = ("limiter", "subjects", "heads", "items", "estimates", "futures", "argv", "riding", "settlements")

    def __init__(self, limiter: RedisLimiter, subjects: SubjectSet, heads: _Heads) -> None:
        self.limiter = limiter
        self.subjects = subjects
        self.heads = heads
        self.items: list[str] = []
        self.estimates: list[Estimate] = []
        self.futures: list[asyncio.Future] = []
        self.argv = b""
        self.riding: _Settlements | None = None   # settlements due when it was still open: they ride along
        self.settlements = 0                 # how many rode along (counted if dropped)

    def add(self, estimate: Estimate, future: asyncio.Future) -> None:
        self.items.append(f"{estimate.tokens},{estimate.nano_usd}")
        self.estimates.append(estimate)
        self.futures.append(future)

    def close(self) -> None:
        """No request joins it any more."""
        open_batches = self.limiter._open
        if open_batches.get(self.subjects) is self:
            del open_batches[self.subjects]

    def wire(self) -> bytes:
        self.close()
        heads = self.heads
        settlements = self.riding
        if settlements is None:
            tail = _NO_SETTLEMENTS
        else:
            tail = heads.codes + settlements.args()
            self.settlements = settlements.count
        self.argv = heads.reserve_args + bulk(";".join(self.items).encode()) + tail
        return heads.reserve + self.argv

    def on_reply(self, reply: object) -> None:
        self.close()                 # written, or its connection failed before it was
        limiter = self.limiter
        if isinstance(reply, RespError) and reply.noscript:      # Redis restarted empty: EVAL loads it
            heads = self.heads
            command = _head(b"EVAL", RESERVE.encode(), heads.keys, _reserve_nargs(len(heads.leased))) + self.argv
            if limiter._client.send(command, self.on_reply):
                return
            reply = RespUnavailable("the connection to Redis closed")
        limiter._answered()
        futures = self.futures
        if reply.__class__ is bytes:
            answers = reply.split(b";")
            if len(answers) == len(futures) + 1:
                self._replay(answers)
                return
        if self.settlements:
            limiter._on_settle_dropped(self.settlements)
        if isinstance(reply, RespUnavailable):
            error = LimiterUnavailable(str(reply))
        else:
            error = LimiterUnavailable(f"unexpected reply to the reserve script: {reply!r}"[:200])
        for future in futures:
            if not future.done():
                future.set_exception(error)

    def _replay(self, answers: list[bytes]) -> None:
        """Each request's Decision values (model.Decision) from the counters before the
        batch: `now, reset_if_counted_now` then per subject `requests, reset, tokens,
        in_flight, spent, reserved, period_end` (Decision's order, resets once); then per
        request "1" (admitted) or "kind,subject,retry_ms"."""
        head = list(map(int, answers[0].split(b",")))
        now, reset_now = head[0], head[1]
        nsub = len(self.subjects.subjects)
        state = [head[2 + 7 * i:9 + 7 * i] for i in range(nsub)]
        leased = self.heads.leased
        for future, estimate, answer in zip(self.futures, self.estimates, answers[1:]):
            if answer == b"1":
                tokens, nano = estimate.tokens, estimate.nano_usd
                for s, held in zip(state, leased):
                    if not s[0]:
                        s[1] = reset_now                 # its first request: the oldest now
                    s[0] += 1
                    s[2] += tokens
                    if held:
                        s[3] += 1
                        s[5] += nano
                values = [1, 0, 0, 0, now]
                for n, reset, tk, inflight, spent, reserved, end in state:
                    values += (n, reset, tk, reset, inflight, spent, reserved, end)
            else:
                kind, who, retry = map(int, answer.split(b","))
                values = [0, kind, who, retry, now]
                for i, (n, reset, tk, inflight, spent, reserved, end) in enumerate(state, 1):
                    if not n:
                        reset = 0
                    values += (n, reset, tk, retry if kind == TOKENS and who == i else reset, inflight, spent,
                               reserved, end)
            if not future.done():
                future.set_result(values)


class _Settlements:
    """A subject set's settlements of the last few ms, summed the way SETTLE reads them:
    per lease bucket [count, reserved nano-USD, used nano-USD, used beyond the estimate],
    per rate bucket the tokens to correct."""

    __slots__ = ("groups", "fixes", "count")

    def __init__(self) -> None:
        self.groups: dict[int, list[int]] = {}
        self.fixes: dict[int, int] = {}
        self.count = 0

    def args(self) -> bytes:
        groups = ";".join(f"{e},{c},{reserved},{used},{excess}"
                          for e, (c, reserved, used, excess) in self.groups.items())
        fixes = ";".join(f"{b},{d}" for b, d in self.fixes.items())
        return bulk(groups.encode()) + bulk(fixes.encode())


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
        self._bucket = max(1, self._window_ms // 60)              # as the scripts compute them
        self._lease_bucket = max(1, self._lease_ms // 60)
        self._open: dict[SubjectSet, _ReserveBatch] = {}      # batches requests may still join
        self._reserving = 0                                    # reserve calls written, not answered
        self._parked: list[_ReserveBatch] = []                 # batches waiting for those answers
        self._settle_interval_s = settle_interval_s
        self._pending: dict[SubjectSet, _Settlements] = {}
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
        client = self._client
        if not client.connected:
            try:
                await client.ensure_connected()
            except RespUnavailable as exc:
                raise LimiterUnavailable(str(exc)) from None
        future = asyncio.get_running_loop().create_future()
        batch = self._open.get(subjects)
        if batch is None or len(batch.futures) >= _RESERVE_BATCH:
            heads = subjects.cache
            if heads is None:
                heads = subjects.cache = _Heads(self._prefix, subjects, self._window_ms, self._lease_ms)
            batch = self._open[subjects] = _ReserveBatch(self, subjects, heads)
            batch.add(estimate, future)
            if self._reserving:            # a reserve call is on its way: this one follows its answer
                self._parked.append(batch)
            else:
                self._send(batch)
        else:
            batch.add(estimate, future)
        return Decision(await future, len(subjects.subjects))

    def _send(self, batch: _ReserveBatch) -> None:
        self._reserving += 1
        if not self._client.send(batch, batch.on_reply):
            batch.on_reply(RespUnavailable("the connection to Redis closed"))

    def _answered(self) -> None:
        """A reserve call was answered (or failed): the batches that waited for it leave."""
        self._reserving -= 1
        if not self._reserving and self._parked:
            parked, self._parked = self._parked, []
            for batch in parked:
                self._send(batch)

    def settle(self, reservation: Reservation, tokens: int, nano_usd: int) -> None:
        est = reservation.estimate
        at = reservation.at_ms
        pending = self._pending.get(reservation.subjects)
        if pending is None:
            pending = self._pending[reservation.subjects] = _Settlements()
        pending.count += 1
        # by lease bucket (the script's `le` at admission): count, estimated and actual cost, excess
        lease_bucket = (at + self._lease_ms) // self._lease_bucket + 1
        reserved = est.nano_usd
        excess = nano_usd - reserved if nano_usd > reserved else 0
        group = pending.groups.get(lease_bucket)
        if group is None:
            pending.groups[lease_bucket] = [1, reserved, nano_usd, excess]
        else:
            group[0] += 1
            group[1] += reserved
            group[2] += nano_usd
            group[3] += excess
        if tokens != est.tokens:                 # by rate bucket: the tokens the estimate was off
            rate_bucket = at // self._bucket
            pending.fixes[rate_bucket] = pending.fixes.get(rate_bucket, 0) + tokens - est.tokens
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(self._settle_interval_s, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        pending, self._pending = self._pending, {}
        for subjects, settlements in pending.items():
            batch = self._open.get(subjects)
            if batch is not None and batch.riding is None:
                # a reserve call for the same subjects is about to leave (this turn, or after
                # the call on its way): they ride along, applied first, no call of their own
                batch.riding = settlements
                continue
            heads: _Heads = subjects.cache
            args = heads.codes + settlements.args()
            if not self._client.send(heads.settle + args, self._settled(heads, args, settlements.count)):
                self._later(self._send_when_connected(heads, args, settlements.count))

    def _settled(self, heads: _Heads, args: bytes, count: int):
        def on_reply(reply: object) -> None:
            if isinstance(reply, RespError) and reply.noscript:
                command = _head(b"EVAL", SETTLE.encode(), heads.keys, 3) + args
                if self._client.send(command, self._settled(heads, args, count)):
                    return
            if isinstance(reply, Exception):
                self._on_settle_dropped(count)
        return on_reply

    async def _send_when_connected(self, heads: _Heads, args: bytes, count: int) -> None:
        try:
            await self._client.ensure_connected()
        except RespUnavailable:
            self._on_settle_dropped(count)       # Redis is down: its state is stale anyway
            return
        if not self._client.send(heads.settle + args, self._settled(heads, args, count)):
            self._on_settle_dropped(count)

    def _later(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the admin API -------------------------------------------------------------------

    async def peek(self, subjects: SubjectSet) -> tuple[int, list[SubjectState]]:
        heads = subjects.cache
        if heads is None:
            heads = subjects.cache = _Heads(self._prefix, subjects, self._window_ms, self._lease_ms)
        try:
            reply = await self._client.call(_head(b"EVALSHA", _SHA[PEEK], heads.keys, 1) + heads.peek)
            if isinstance(reply, RespError) and reply.noscript:
                reply = await self._client.call(_head(b"EVAL", PEEK.encode(), heads.keys, 1) + heads.peek)
        except RespUnavailable as exc:
            raise LimiterUnavailable(str(exc)) from None
        if not isinstance(reply, bytes):
            raise LimiterUnavailable(f"unexpected reply to the peek script: {reply!r}"[:200])
        values = [int(v) for v in reply.split(b",")]
        return values[0], [SubjectState(*values[1 + 8 * i:9 + 8 * i]) for i in range(len(subjects.subjects))]
