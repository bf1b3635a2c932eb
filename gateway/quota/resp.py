"""A lean, pipelined Redis connection for the limiter's two hot-path calls.

Why not redis-py here: one `evalsha` through redis.asyncio cost 65-80 µs of this
process's CPU on this machine (command packing, connection pool, pure-Python reply
parser), about 70% of what a whole proxied request costs the gateway
(docs/benchmarks.md). The limiter sends two kinds of pre-encoded command (reserve,
settle) and reads back a string or an integer; this module does that and nothing else:

- one connection per process (TCP, TLS, or a unix socket); commands are written as they
  come, the writes of one event-loop turn coalesced into one `write()`, and replies
  matched to callers in order (Redis answers in order on a connection);
- a command may be `Batched`: other callers join it until the turn's writes leave
  (the limiter's reserve calls, one per key+tenant and turn);
- a reply is a value or a `RespError` (an error reply, e.g. NOSCRIPT) handed back, never
  raised: the caller decides;
- failure model as in cache/stores/redis.py: a call gets at most `timeout_s`; a refused
  connection or a timeout makes every call fail fast (`RespUnavailable`, no network) for
  `retry_after_s`, then the next call tries again.

redis-py stays in use for everything that is not on the request path (the admin API,
virtual-key and tenant records).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

log = logging.getLogger("sluice.quota")


class RespError(Exception):
    """An error reply from Redis (returned as a value, not raised)."""

    @property
    def noscript(self) -> bool:
        return str(self).startswith("NOSCRIPT")


class RespUnavailable(ConnectionError):
    """No answer from Redis: refused, timed out, or the connection was lost."""


def encode(*parts: bytes) -> bytes:
    """A command in the RESP wire format."""
    out = [b"*%d\r\n" % len(parts)]
    for p in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(p), p))
    return b"".join(out)


def bulk(part: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(part), part)


class Batched(Protocol):
    """A command that other callers may still join until it is written: `wire()` is
    called when this event-loop turn's writes leave, and closes it."""

    def wire(self) -> bytes: ...


class _Incomplete(Exception):
    pass


def _parse(buf: bytearray, pos: int) -> tuple[Any, int]:
    """One reply starting at `pos`: (value, position after it); _Incomplete if cut."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _Incomplete
    kind = buf[pos]
    if kind == 36:                                        # $ bulk string
        n = int(buf[pos + 1:end])
        if n < 0:
            return None, end + 2
        stop = end + 2 + n
        if len(buf) < stop + 2:
            raise _Incomplete
        return bytes(buf[end + 2:stop]), stop + 2
    if kind == 58:                                        # : integer
        return int(buf[pos + 1:end]), end + 2
    if kind == 43:                                        # + simple string
        return bytes(buf[pos + 1:end]), end + 2
    if kind == 45:                                        # - error
        return RespError(buf[pos + 1:end].decode("utf-8", "replace")), end + 2
    if kind == 42:                                        # * array
        n = int(buf[pos + 1:end])
        if n < 0:
            return None, end + 2
        items = []
        pos = end + 2
        for _ in range(n):
            value, pos = _parse(buf, pos)
            items.append(value)
        return items, pos
    raise ValueError(f"unexpected RESP reply type {chr(kind)!r}")


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: RespClient) -> None:
        self._owner = owner
        self._buf = bytearray()
        self.waiters: deque[tuple[Any, float]] = deque()   # (future | callback | None, sent at)
        self.transport: asyncio.Transport | None = None
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, command: bytes | Batched, waiter: Any, now: float) -> None:
        self._out.append(command)
        self.waiters.append((waiter, now))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._out and self.transport is not None and not self.closed:
            out, self._out = self._out, []
            self.transport.write(b"".join([c if c.__class__ is bytes else c.wire() for c in out]))

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos = 0
        size = len(buf)
        waiters = self.waiters
        try:
            while waiters and pos < size:
                if buf[pos] == 36:                      # $: a bulk string, the reserve's answer
                    end = buf.find(b"\r\n", pos)
                    if end < 0:
                        raise _Incomplete
                    n = int(buf[pos + 1:end])
                    if n < 0:
                        value, pos = None, end + 2
                    else:
                        stop = end + 2 + n
                        if stop + 2 > size:
                            raise _Incomplete
                        value = bytes(buf[end + 2:stop])
                        pos = stop + 2
                else:
                    value, pos = _parse(buf, pos)
                waiter = waiters.popleft()[0]
                if waiter.__class__ is _Future:
                    if not waiter.done():
                        waiter.set_result(value)
                else:
                    _resolve(waiter, value)
        except _Incomplete:
            pass
        except ValueError as exc:                       # not Redis speaking: give up on it
            self.abort(f"bad reply: {exc}")
            return
        if pos:
            del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_all("connection lost")
        self._owner._lost(self)

    def abort(self, reason: str) -> None:
        self._fail_all(reason)
        if self.transport is not None:
            self.transport.abort()
        self._owner._lost(self)

    def _fail_all(self, reason: str) -> None:
        self.closed = True
        self._out.clear()
        while self.waiters:
            waiter, _ = self.waiters.popleft()
            _resolve(waiter, RespUnavailable(reason))


_Future = asyncio.Future          # what asyncio's and uvloop's create_future() make


def _resolve(waiter: Any, value: Any) -> None:
    if waiter is None:
        return
    if isinstance(waiter, asyncio.Future):
        if not waiter.done():
            if isinstance(value, RespUnavailable):
                waiter.set_exception(value)
            else:
                waiter.set_result(value)
        return
    try:
        waiter(value)
    except Exception:
        log.exception("quota: a Redis reply callback failed")


class RespClient:
    def __init__(self, url: str, *, timeout_s: float = 0.25, retry_after_s: float = 1.0) -> None:
        parts = urlsplit(url)
        self._socket_path = parts.path if parts.scheme == "unix" else None   # unix:///run/redis.sock?db=0
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 6379
        self._ssl = ssl.create_default_context() if parts.scheme == "rediss" else None
        self._username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        if self._socket_path is not None:
            db = parse_qs(parts.query).get("db", ["0"])[0]
        else:
            db = parts.path.lstrip("/")
        self._db = int(db) if db.isdigit() else 0
        self._timeout_s = timeout_s
        self._retry_after_s = retry_after_s
        self._proto: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        self._down_until = 0.0
        self._watchdog: asyncio.TimerHandle | None = None
        self.on_down: Callable[[str], None] | None = None   # told when Redis stops answering
        self.on_up: Callable[[], None] | None = None        # and when it answers again

    @property
    def connected(self) -> bool:
        return self._proto is not None and not self._proto.closed

    async def call(self, command: bytes) -> Any:
        """Send one encoded command; its reply (a RespError for an error reply).
        Raises RespUnavailable when Redis cannot be asked or does not answer in time."""
        proto = self._proto
        if proto is None or proto.closed:
            proto = await self._connect()
        fut = asyncio.get_running_loop().create_future()
        proto.send(command, fut, time.monotonic())
        self._arm_watchdog()
        return await fut

    def send(self, command: bytes | Batched, on_reply: Callable[[Any], None] | None = None) -> bool:
        """Send without waiting (settlements, batched reserves): False when no connection is
        open right now. `on_reply` gets the reply, a RespError, or RespUnavailable."""
        proto = self._proto
        if proto is None or proto.closed:
            return False
        proto.send(command, on_reply, time.monotonic())
        self._arm_watchdog()
        return True

    async def ensure_connected(self) -> None:
        if self._proto is None or self._proto.closed:
            await self._connect()

    async def aclose(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        proto, self._proto = self._proto, None
        if proto is not None and proto.transport is not None:
            proto._fail_all("closed")
            proto.transport.close()

    # -- connection ----------------------------------------------------------------------

    async def _connect(self) -> _Protocol:
        if time.monotonic() < self._down_until:
            raise RespUnavailable("Redis did not answer recently")
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
        try:
            return await asyncio.shield(self._connecting)
        finally:
            if self._connecting is not None and self._connecting.done():
                self._connecting = None

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        try:
            if self._socket_path is not None:       # a Redis on this machine: no TCP stack per call
                connecting = loop.create_unix_connection(lambda: _Protocol(self), self._socket_path)
            else:
                connecting = loop.create_connection(lambda: _Protocol(self), self._host, self._port, ssl=self._ssl)
            _, proto = await asyncio.wait_for(connecting, self._timeout_s * 4)
            hello = []
            if self._password is not None:
                hello.append(encode(b"AUTH", self._username.encode(), self._password.encode())
                             if self._username else encode(b"AUTH", self._password.encode()))
            if self._db:
                hello.append(encode(b"SELECT", str(self._db).encode()))
            for command in hello:
                fut = loop.create_future()
                proto.send(command, fut, time.monotonic())
                reply = await asyncio.wait_for(fut, self._timeout_s * 4)
                if isinstance(reply, RespError):
                    proto.abort("handshake refused")
                    raise RespUnavailable(f"Redis refused the connection set-up: {reply}")
        except (OSError, asyncio.TimeoutError) as exc:
            self._trip(f"{type(exc).__name__}: {exc}")
            raise RespUnavailable(f"cannot connect to Redis: {type(exc).__name__}") from None
        except RespUnavailable as exc:
            self._trip(str(exc))
            raise
        was_down = self._down_until > 0
        self._proto = proto
        self._down_until = 0.0
        if was_down and self.on_up is not None:
            self.on_up()
        return proto

    def _trip(self, reason: str) -> None:
        first = self._down_until == 0.0
        self._down_until = time.monotonic() + self._retry_after_s
        if first and self.on_down is not None:
            self.on_down(reason)

    def _lost(self, proto: _Protocol) -> None:
        if self._proto is proto:
            self._proto = None

    def _arm_watchdog(self) -> None:
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().call_later(self._timeout_s / 2, self._check)

    def _check(self) -> None:
        """Every timeout_s/2 while replies are awaited: a reply older than timeout_s means
        Redis stopped answering; every call waiting on it fails and the fail mode decides."""
        self._watchdog = None
        proto = self._proto
        if proto is None or not proto.waiters:
            return
        oldest = proto.waiters[0]
        if time.monotonic() - oldest[1] > self._timeout_s:
            # Confirm on the next loop turn, after its I/O: on a busy loop the reply may be
            # in the socket already, unread, and a late timer is not a dead Redis.
            asyncio.get_running_loop().call_soon(self._confirm, proto, oldest)
            return
        self._arm_watchdog()

    def _confirm(self, proto: _Protocol, oldest: tuple) -> None:
        if proto.waiters and proto.waiters[0] is oldest and not proto.closed:
            self._trip("timed out")
            proto.abort("timed out")
            return
        if proto.waiters:
            self._arm_watchdog()
