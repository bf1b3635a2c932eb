"""One connection's life under uvicorn, and the limits on connections.

uvicorn alone waits for a request's headers and body as long as a client cares to
trickle them, accepts connections until the process runs out of file descriptors and
takes headers of any size. Here:

- `GatewayHttpProtocol`, uvicorn's httptools protocol subclassed, notes where each
  connection is (waiting for the head of a request, for its body, for the app, idle
  between requests, closing) and since when. One sweep per process, every second at the
  defaults (`_Connections.sweep`), closes those past their phase's deadline: the request
  path arms no timer (uvicorn's own keep-alive timer, one `call_later` per response, is
  replaced by the sweep) and pays a few attribute writes and clock reads per request
  (measured in isolation: under 1 µs of CPU per request; a proxied request takes ~200 µs).
- Connections over `server.max_connections` or `server.max_connections_per_client`
  (counted per process, per peer address) are not served: each gets a short grace to
  send its request head, which is answered 503 in the caller's wire format (health
  probes are still answered), then closed; at most `ConnectionLimits.refusing_max` of
  them wait at once, the oldest is dropped for a newer one. The descriptors they can take are bounded, and
  `fit_open_file_limit` raises the soft RLIMIT_NOFILE and, if it must, lowers
  `max_connections` so that the bound fits.
- A request head over `server.max_header_bytes` gets 431, a head or body not received
  within its timeout 408, a request the parser rejects 400 (all in the caller's wire
  format: Anthropic's error shape on /v1/messages or with an `anthropic-version` header,
  OpenAI's otherwise; uvicorn answered 400 in plain text).
- Every answer written here says `connection: close` and is followed by a lingering
  close: shut down our side, read and discard what the client still sends (at most
  `LINGER_S`, `LINGER_MAX_BYTES`), then close. Closing with unread data makes the kernel
  send a reset, which can destroy the answer before the client reads it.

Tested against uvicorn 0.55: the subclass overrides `data_received` and
`on_response_complete` whole (copies of uvicorn's, minus the keep-alive timer).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from gateway.config import SluiceConfig
from gateway.errors import error_body
from gateway.types import WireFormat

logger = logging.getLogger("sluice")

# Where a connection is. FRESH: connected, nothing received; HEADERS: the head of a
# request is arriving; BODY: its body is; APP: the client has sent the request and waits
# for the answer (no deadline here); IDLE: between requests; CLOSING: answered by this
# module, lingering; REFUSING: over a cap, waiting for the head to answer 503.
FRESH, HEADERS, BODY, APP, IDLE, CLOSING, REFUSING = range(7)

LINGER_S = 2.0                 # a lingering close reads for at most this long...
LINGER_MAX_BYTES = 1 << 20     # ...and at most this much, then closes
REFUSE_GRACE_S = 2.0           # an over-cap connection has this long to send its head
FD_RESERVE = 256               # descriptors for everything but connections (files, pipes, sockets)
_HEALTH_PATHS = (b"/healthz", b"/readyz")


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """`server:` connection settings, per process (see `gateway.config.ServerConfig`)."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    keep_alive_timeout_s: float = 5.0
    max_connections: int = 10_000
    max_connections_per_client: int = 1_000      # 0: no per-client cap
    max_header_bytes: int = 32 * 1024

    @classmethod
    def from_config(cls, cfg: SluiceConfig) -> ConnectionLimits:
        s = cfg.server
        return cls(header_timeout_s=s.header_timeout_s, body_timeout_s=s.body_timeout_s,
                   keep_alive_timeout_s=s.keep_alive_timeout_s, max_connections=s.max_connections,
                   max_connections_per_client=s.max_connections_per_client,
                   max_header_bytes=s.max_header_bytes)

    @property
    def refusing_max(self) -> int:
        """How many over-cap connections may wait for their 503 at once."""
        return max(16, self.max_connections // 10)

    def deadlines(self) -> tuple[float | None, ...]:
        """Seconds allowed in each phase (indexed by phase; None: no deadline)."""
        return (self.header_timeout_s, self.header_timeout_s, self.body_timeout_s, None,
                self.keep_alive_timeout_s, LINGER_S, min(REFUSE_GRACE_S, self.header_timeout_s))

    def sweep_interval(self) -> float:
        """A deadline fires at most this late: a quarter of the shortest timeout, 50 ms to 1 s."""
        shortest = min(self.header_timeout_s, self.body_timeout_s, self.keep_alive_timeout_s)
        return min(1.0, max(0.05, shortest / 4))


def fit_open_file_limit(limits: ConnectionLimits, upstream_connections: int) -> ConnectionLimits:
    """Raise the soft open-file limit to the hard one, and lower `max_connections` if the
    connections this process may hold (served, refused, upstream) still would not fit:
    running out of descriptors stops the accept loop, health checks included."""
    try:
        import resource
    except ImportError:                                     # not a Unix
        return limits
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return limits
    available = soft - FD_RESERVE - upstream_connections
    if limits.max_connections + limits.refusing_max <= available:
        return limits
    fitted = max(1, available * 10 // 11)                  # served + refusing_max (a tenth) fit
    logger.warning("server.max_connections %d does not fit the open-file limit (%d, of which %d for "
                   "upstream connections): serving at most %d connections per process; raise `ulimit -n`",
                   limits.max_connections, soft, upstream_connections, fitted)
    return replace(limits, max_connections=fitted)


class _Answered(Exception):
    """Raised from a parser callback after answering: stops parsing the rest of the data."""


class _Connections:
    """The connections of one server (one process): caps, and the sweep that enforces the
    deadlines. Lives on uvicorn's `ServerState`, made by the first connection."""

    def __init__(self, limits: ConnectionLimits, loop: Any) -> None:
        self.limits = limits
        self.loop = loop
        self.deadlines = limits.deadlines()
        self.interval = limits.sweep_interval()
        self.served: set[GatewayHttpProtocol] = set()
        self.refusing: dict[GatewayHttpProtocol, None] = {}      # insertion order: oldest first
        self.per_client: dict[str, int] = {}
        self.refused = {"client": 0, "gateway": 0}               # since the last log line
        self._last_report = loop.time()
        self._timer: Any = None

    def admit(self, conn: GatewayHttpProtocol) -> None:
        """Serve the new connection, or mark it refused (over a cap)."""
        limits = self.limits
        peer = conn.peer
        count = self.per_client.get(peer, 0)
        if len(self.served) >= limits.max_connections:
            reason = "gateway"
        elif limits.max_connections_per_client and count >= limits.max_connections_per_client:
            reason = "client"
        else:
            self.served.add(conn)
            self.per_client[peer] = count + 1
            self._arm()
            return
        self.refused[reason] += 1
        if len(self.refusing) >= limits.refusing_max:       # drop the oldest: newcomers get their answer
            oldest = next(iter(self.refusing))
            del self.refusing[oldest]
            oldest.transport.abort()
        conn.refusal = reason
        conn.phase = REFUSING
        self.refusing[conn] = None
        self._arm()

    def release(self, conn: GatewayHttpProtocol) -> None:
        if conn in self.served:
            self.served.discard(conn)
            count = self.per_client[conn.peer] - 1
            if count:
                self.per_client[conn.peer] = count
            else:
                del self.per_client[conn.peer]
        else:
            self.refusing.pop(conn, None)

    def _arm(self) -> None:
        if self._timer is None:
            self._timer = self.loop.call_later(self.interval, self.sweep)

    def sweep(self) -> None:
        """Close every connection past its phase's deadline; runs while there are any."""
        self._timer = None
        now = self.loop.time()
        deadlines = self.deadlines
        try:
            for conn in [*self.served, *self.refusing]:
                limit = deadlines[conn.phase]
                if limit is not None and now - conn.since > limit:
                    try:
                        conn.expire()
                    except Exception:                        # one bad connection must not stop the sweep
                        logger.exception("closing an expired connection failed")
                        conn.transport.abort()
            if now - self._last_report >= 10.0:
                self._report(now)
        finally:
            if self.served or self.refusing:
                self._arm()

    def _report(self, now: float) -> None:
        client, gateway = self.refused["client"], self.refused["gateway"]
        if client or gateway:
            logger.warning("refused %d connections in %.0f s: %d over server.max_connections_per_client (%d), "
                           "%d over server.max_connections (%d)", client + gateway, now - self._last_report,
                           client, self.limits.max_connections_per_client, gateway, self.limits.max_connections)
            self.refused = {"client": 0, "gateway": 0}
        self._last_report = now


def _connections(server_state: Any, config: Any, loop: Any) -> _Connections:
    conns = getattr(server_state, "sluice_connections", None)
    if conns is None:
        limits = getattr(config, "connection_limits", None) or ConnectionLimits()
        conns = server_state.sluice_connections = _Connections(limits, loop)
    return conns


def _caller_format(url: bytes, headers: list[tuple[bytes, bytes]] | None) -> WireFormat:
    """As `gateway.app.caller_format`, from what the parser has seen so far."""
    if url.startswith(b"/v1/messages") or any(name == b"anthropic-version" for name, _ in headers or ()):
        return WireFormat.ANTHROPIC
    return WireFormat.OPENAI


class GatewayHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with deadlines, caps and a header size limit."""

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any], _loop: Any = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._conns = _connections(server_state, config, self.loop)
        self._limits = self._conns.limits
        self._max_head = self._limits.max_header_bytes
        self._clock = self.loop.time
        self.phase = FRESH
        self.since = 0.0
        self.peer = ""
        self.refusal: str | None = None      # "client" / "gateway": over that cap
        self._head_bytes = 0                 # bytes of the current head seen in earlier chunks
        self._chunk_bytes = 0                # size of the chunk being parsed
        self._lingered = 0

    # -- connection ------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.since = self._clock()
        self.peer = self.client[0] if self.client else ""
        self._conns.admit(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._conns.release(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # uvicorn's, without its keep-alive timer (the sweep has the deadlines), and with
        # the header size limit.
        if self.phase == CLOSING:
            self._lingered += len(data)
            if self._lingered > LINGER_MAX_BYTES:
                self.transport.close()
            return
        self._chunk_bytes = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._unsupported_upgrade_warning()      # no WebSocket here (ws="none")
        except httptools.HttpParserError:
            if self.phase == CLOSING:                # a callback answered and stopped the parser
                return
            self.logger.warning("Invalid HTTP request received.")
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                self.transport.close()           # behind an answer in progress: no room for ours
            else:
                self._answer(400, "Invalid HTTP request received", "invalid_request", "invalid_request_error")
            return
        phase = self.phase
        if phase == HEADERS or phase == REFUSING:    # the head is still incomplete
            # A chunk holding the end of a pipelined request and the start of the next
            # counts whole: pipelining clients can get a 431 a little early.
            self._head_bytes += len(data)
            if self._head_bytes > self._max_head:
                self._answer_head_too_large()

    # -- parser callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        phase = self.phase
        if phase == IDLE or phase == APP:            # the next request on this connection
            self.phase = HEADERS
            self.since = self._clock()
        elif phase == FRESH:                         # the head's deadline runs from the connect
            self.phase = HEADERS

    def on_headers_complete(self) -> None:
        if self._head_bytes + self._chunk_bytes > self._max_head and self._head_size() > self._max_head:
            self._answer_head_too_large()
            raise _Answered
        if self.phase == REFUSING:
            if not (self.parser.get_method() == b"GET" and self.url.partition(b"?")[0] in _HEALTH_PATHS):
                self._answer_refused()
                raise _Answered
            self.phase = BODY                        # a health probe is answered anyway, then closed
            super().on_headers_complete()
            self.cycle.keep_alive = False
            return
        self.phase = BODY
        self.since = self._clock()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        cycle = self.cycle
        # Answered before the body was read (a 413): nothing more is owed either way.
        self.phase = IDLE if cycle is not None and cycle.response_complete and not self.pipeline else APP
        self.since = self._clock()

    def on_response_complete(self) -> None:
        # uvicorn's, with the keep-alive deadline left to the sweep instead of a timer.
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        elif self.phase == APP:
            self.phase = IDLE
            self.since = self._clock()
        # BODY: answered early; the rest of the body is read and dropped, within its deadline

    # -- limits --------------------------------------------------------------------------

    def _head_size(self) -> int:
        """The size of the complete head: request line, header lines, blank line."""
        return len(self.url) + 16 + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def expire(self) -> None:
        """Called by the sweep when this connection is past its phase's deadline."""
        phase = self.phase
        cycle = self.cycle
        if phase in (HEADERS, BODY) and self.flow.read_paused:
            return                           # uvicorn stopped reading (pipelining, backpressure): not the client
        if phase == HEADERS and (cycle is None or cycle.response_complete):
            self._answer(408, f"The request headers were not received within {self._limits.header_timeout_s:g} s",
                         "request_timeout", "invalid_request_error")
        elif phase == BODY and cycle is not None and not cycle.response_started:
            self._answer(408, f"The request body was not received within {self._limits.body_timeout_s:g} s",
                         "request_timeout", "invalid_request_error")
        elif phase == BODY:                  # answered early, the rest of the body is too slow
            self._close_gently()
        else:                                # nothing under way (FRESH, IDLE, REFUSING), or done lingering
            self.transport.close()

    def _answer_head_too_large(self) -> None:
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            self.transport.close()           # pipelined behind an answer in progress: no room for ours
            self.phase = CLOSING
            return
        self._answer(431, f"The request line and headers exceed the limit of {self._limits.max_header_bytes} bytes",
                     "request_header_fields_too_large", "invalid_request_error")

    def _answer_refused(self) -> None:
        if self.refusal == "client":
            limit = self._limits.max_connections_per_client
            message = f"Too many connections from this address (the limit is {limit}); retry later"
        else:
            message = "The gateway is at its connection limit; retry later"
        self._answer(503, message, "too_many_connections", "service_unavailable", [(b"retry-after", b"1")])

    def _answer(self, status: int, message: str, code: str, type_: str,
                headers: list[tuple[bytes, bytes]] | None = None) -> None:
        """Write an error answer in the caller's wire format, then close gently. A request
        the app was reading is told the client left (its answer would come too late)."""
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()
        body = error_body(_caller_format(getattr(self, "url", b""), self.headers), status, message, type_, code)
        parts = [STATUS_LINE[status]]
        for name, value in [*self.server_state.default_headers, *(headers or ())]:
            parts += [name, b": ", value, b"\r\n"]
        parts += [b"content-type: application/json\r\ncontent-length: ", str(len(body)).encode(),
                  b"\r\nconnection: close\r\n\r\n", body]
        self.transport.write(b"".join(parts))
        self._close_gently()

    def _close_gently(self) -> None:
        """Lingering close: FIN after what is written, then read and drop until the client
        closes too (or LINGER_S / LINGER_MAX_BYTES run out, in the sweep / data_received)."""
        self.phase = CLOSING
        self.since = self._clock()
        self._lingered = 0
        self.flow.resume_reading()
        transport = self.transport
        if transport.is_closing():
            return
        if transport.can_write_eof():
            transport.write_eof()
        else:
            transport.close()
