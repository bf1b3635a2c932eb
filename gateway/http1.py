"""A lean HTTP/1.1 client for the upstream hop: asyncio protocols, httptools' parser.

Why not aiohttp here: a profile of the proxy path put 39% of the gateway's CPU in
aiohttp's client (URL objects, multidicts, cookie jar, tracing hooks, timer contexts,
request/response models) for what is, every time, one POST of ready bytes to a known
origin over a kept-alive connection. This client does that and nothing else: the request
head is formatted once per call into the same write as the body, the response is parsed
by httptools (the C parser uvicorn uses, llhttp), and timeouts are plain loop timers.
Measured in bench/ (docs/benchmarks.md, "Choices these figures made").

What it supports, because providers need it: http and https (TLS with SNI and the system
CA store), keep-alive pools per origin with a total connection limit, Content-Length and
chunked responses, streaming bodies, connect / read (between bytes) / total timeouts, and
one transparent retry when a kept-alive connection turns out to be closed before any byte
of the answer arrived (the server had dropped it while idle, so it never saw the request).
What it leaves out on purpose: redirects, cookies, proxies (HTTP(S)_PROXY is not read; the
aiohttp client does not read it either), compression negotiation (no Accept-Encoding is
sent, so bodies come back plain), HTTP/2, and responses delimited only by the connection
closing (providers send Content-Length or chunked bodies).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

_MAX_BUFFER = 1 << 20          # bytes a streaming reader may lag behind before reading pauses


class Http1Error(Exception):
    """Base of this module's transport errors."""


class ConnectError(Http1Error):
    pass


class ConnectionDropped(Http1Error):
    """The connection closed (or the response was malformed) before the answer was whole."""


class ReadTimeout(Http1Error):
    pass


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int
    target: str          # path and query, as sent on the request line
    host_header: str


_ORIGINS: dict[str, Origin] = {}


def origin_of(url: str) -> Origin:
    """Parsed once per distinct URL (the deployments' URLs are few)."""
    cached = _ORIGINS.get(url)
    if cached is None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        default = 443 if parts.scheme == "https" else 80
        port = parts.port or default
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname    # IPv6 literal
        host_header = host if port == default else f"{host}:{port}"
        cached = Origin(parts.scheme, parts.hostname, port, target, host_header)
        if len(_ORIGINS) < 10_000:
            _ORIGINS[url] = cached
    return cached


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection and the response being read on it."""

    def __init__(self, pool: Http1Pool, key: tuple[str, str, int]) -> None:
        self._pool = pool
        self.key = key
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self._parser = httptools.HttpResponseParser(self)
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self.complete = False
        self._reusable = False
        self.received_any = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future | None = None
        self._headers_done = False
        self._paused = False
        self.last_activity = 0.0

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        self.last_activity = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionDropped(f"malformed response: {exc}"))
            self.close()

    def eof_received(self) -> bool | None:
        return None               # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._pool._forget(self)
        if not self.complete:
            self._fail(ConnectionDropped("upstream closed the connection"))

    # -- httptools callbacks ---------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self._headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _MAX_BUFFER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._reusable = self._parser.should_keep_alive()    # only valid inside this callback
        self._wake()

    # -- the request ---------------------------------------------------------------------

    def send(self, head: bytes, body: bytes) -> None:
        assert self.transport is not None
        self.last_activity = self._loop.time()
        self.transport.write(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            self.transport.write(body)

    async def wait_headers(self) -> None:
        while not self._headers_done:
            await self._wait()

    async def next_chunk(self) -> bytes | None:
        """The next piece of the body, or None once the response is complete."""
        while not self._chunks:
            if self.complete:
                return None
            await self._wait()
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._paused and self._buffered < _MAX_BUFFER // 2 and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return chunk

    async def read_all(self) -> bytes:
        while not self.complete:
            await self._wait()
        body = b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        return body

    def keep_alive(self) -> bool:
        return self.complete and self._reusable and not self.closed

    def _wait(self) -> asyncio.Future:
        if self._error is not None:
            raise self._error
        self._waiter = self._loop.create_future()
        return self._waiter

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def timed_out(self, exc: BaseException) -> None:
        self._fail(exc)
        self.close()

    def recycle(self) -> None:
        """Ready for the next request on this connection (after a complete response)."""
        self._parser = httptools.HttpResponseParser(self)
        self._reset()
        self.reused = True

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()
        self._pool._forget(self)


class Response:
    """A response whose headers have arrived; read the body, then `release()`."""

    def __init__(self, pool: Http1Pool, conn: _Connection, read_s: float, total_deadline: float | None) -> None:
        self._pool = pool
        self._conn = conn
        self.status = conn.status
        self.headers: Mapping[str, str] = conn.headers
        self._read_s = read_s
        self._deadline = total_deadline
        self._released = False

    async def read(self) -> bytes:
        conn = self._conn
        try:
            with _Watchdog(conn, self._read_s, self._deadline):
                body = await conn.read_all()
        finally:
            self.release()            # closed, not pooled, unless the body is whole
        return body

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        conn = self._conn
        try:
            with _Watchdog(conn, self._read_s, self._deadline):
                while (chunk := await conn.next_chunk()) is not None:
                    yield chunk
        finally:
            self.release()

    def release(self) -> None:
        """Back to the pool if the body was read whole, else closed."""
        if self._released:
            return
        self._released = True
        self._pool._release(self._conn)


class _Watchdog:
    """Read timeout (time since the last byte) and total deadline, as one loop timer."""

    def __init__(self, conn: _Connection, read_s: float, deadline: float | None) -> None:
        self._conn = conn
        self._read_s = read_s
        self._deadline = deadline
        self._loop = asyncio.get_running_loop()
        self._handle: asyncio.TimerHandle | None = None

    def __enter__(self) -> _Watchdog:
        self._arm()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _arm(self) -> None:
        at = self._conn.last_activity + self._read_s
        if self._deadline is not None:
            at = min(at, self._deadline)
        self._handle = self._loop.call_at(at, self._check)

    def _check(self) -> None:
        now = self._loop.time()
        if self._deadline is not None and now >= self._deadline:
            self._conn.timed_out(ReadTimeout("total timeout"))
        elif now - self._conn.last_activity >= self._read_s:
            self._conn.timed_out(ReadTimeout("read timeout"))
        else:
            self._arm()


class Http1Pool:
    """Kept-alive connections per origin, at most `max_connections` open in all.

    At the limit a request takes the next connection that is released (an idle one of
    another origin is closed to make room); it waits at most its connect timeout.
    """

    def __init__(self, max_connections: int = 1000, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self._max = max_connections
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._all: set[_Connection] = set()
        self._waiters: deque[asyncio.Future] = deque()
        self._ssl = ssl_context

    @property
    def open_connections(self) -> int:
        return len(self._all)

    async def request(self, url: str, headers: Mapping[str, str], body: bytes, *, connect_s: float,
                      read_s: float, total_s: float | None) -> Response:
        """POST `body`; returns once the response headers are in."""
        origin = origin_of(url)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + total_s if total_s else None
        head = _request_head(origin, headers, len(body))
        for attempt in (0, 1):
            conn = await self._acquire(origin, connect_s, deadline, reuse=attempt == 0)
            conn.send(head, body)
            try:
                with _Watchdog(conn, read_s, deadline):
                    await conn.wait_headers()
            except ConnectionDropped:
                conn.close()
                if conn.reused and not conn.received_any and attempt == 0:
                    continue            # the server had closed the idle connection: once more, fresh
                raise
            except BaseException:
                conn.close()
                raise
            return Response(self, conn, read_s, deadline)
        raise AssertionError("unreachable")

    async def _acquire(self, origin: Origin, connect_s: float, deadline: float | None, *,
                       reuse: bool) -> _Connection:
        loop = asyncio.get_running_loop()
        if deadline is not None:
            connect_s = max(0.0, min(connect_s, deadline - loop.time()))
        wait_until = loop.time() + connect_s
        key = (origin.scheme, origin.host, origin.port)
        while True:
            if reuse and (conn := self._take_idle(key)) is not None:
                return conn
            if len(self._all) >= self._max:
                self._evict_idle()
            if len(self._all) < self._max:
                return await self._connect(origin, key, max(0.0, wait_until - loop.time()))
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout_at(wait_until):
                    await waiter
            except TimeoutError:
                raise ConnectError(f"no free upstream connection within {connect_s:g}s "
                                   f"(limit {self._max})") from None
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def _take_idle(self, key: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                return conn
        return None

    def _evict_idle(self) -> None:
        for idle in self._idle.values():
            if idle:
                idle.pop(0).close()
                return

    async def _connect(self, origin: Origin, key: tuple[str, str, int], timeout_s: float) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = None
        if origin.scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            tls = self._ssl
        placeholder = _Placeholder()
        self._all.add(placeholder)          # holds the slot while connecting
        try:
            async with asyncio.timeout(timeout_s):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self, key), origin.host, origin.port, ssl=tls,
                    server_hostname=origin.host if tls else None)
        except TimeoutError:
            raise ConnectError(f"connect to {origin.host}:{origin.port} timed out") from None
        except OSError as exc:
            raise ConnectError(f"cannot connect to {origin.host}:{origin.port}: {exc}") from None
        finally:
            self._all.discard(placeholder)
            self._wake_one()
        self._all.add(conn)
        return conn

    def _release(self, conn: _Connection) -> None:
        if conn.keep_alive():
            conn.recycle()
            self._idle.setdefault(conn.key, []).append(conn)
            self._wake_one()
        else:
            conn.close()

    def _forget(self, conn: _Connection) -> None:
        if conn in self._all:
            self._all.discard(conn)
            self._wake_one()
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def aclose(self) -> None:
        for conn in list(self._all):
            if isinstance(conn, _Connection):
                conn.close()
        self._idle.clear()


class _Placeholder:
    """A connection being opened, counted against the limit."""


def _request_head(origin: Origin, headers: Mapping[str, str], length: int) -> bytes:
    lines = [f"POST {origin.target} HTTP/1.1\r\nhost: {origin.host_header}\r\ncontent-length: {length}\r\n"]
    for name, value in headers.items():
        if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
            raise ValueError(f"header {name!r} contains a line break")   # no header injection
        lines.append(f"{name}: {value}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")
