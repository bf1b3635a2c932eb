"""The one upstream HTTP client, and the boundary where transport errors get names.

Two implementations of one small interface (`send`, `open_stream`, `aclose`), picked by
`server.upstream_client`:
- `aiohttp` (default): aiohttp's ClientSession used directly.
- `httpx`: httpx.AsyncClient over the `httpx-aiohttp` transport (the default httpx
  transport was 4x slower still, ENVIRONMENT.md).
Measured in bench/ (docs/benchmarks.md): httpx's client layer (request/response
models, auth, redirect and cookie handling) cost about a third of the gateway's CPU per
request, with the same aiohttp connection pool underneath. One client lives for the
app's lifetime; connection pools are shared by every deployment.

Every failure leaves this module as an `UpstreamError` that says whether a retry on the
same deployment can help (`retryable`) and whether another deployment should be tried
(`fallback`). Routing acts on those two flags and nothing else.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import httpx
import orjson
from httpx_aiohttp import AiohttpTransport

from gateway import http1
from gateway.config import Timeouts
from gateway.providers.base import UpstreamRequest

# Worth another try on the same deployment: overload, rate limits, transient server errors.
RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})
# Not the caller's fault but not fixed by retrying here: a bad provider key or an unknown
# upstream model is a deployment problem, so another deployment may still answer.
FALLBACK_ONLY_STATUS = frozenset({401, 403, 404})


class UpstreamError(Exception):
    def __init__(self, outcome: str, *, status: int | None = None, body: bytes | None = None,
                 retry_after_s: float | None = None):
        super().__init__(outcome)
        self.outcome = outcome           # "http_500", "timeout", "connect_error", "connection_dropped"
        self.status = status
        self.body = body
        self.retry_after_s = retry_after_s

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status in RETRYABLE_STATUS

    @property
    def fallback(self) -> bool:
        return self.retryable or self.status in FALLBACK_ONLY_STATUS


def upstream_error_message(err: UpstreamError) -> str:
    """The provider's own error message (either wire format), for a 4xx passed to the caller."""
    try:
        data = orjson.loads(err.body or b"")
        message = data["error"]["message"]
        if isinstance(message, str):
            return message
    except (orjson.JSONDecodeError, KeyError, TypeError):
        pass
    return f"upstream rejected the request with HTTP {err.status}"


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from `retry-after-ms`, `retry-after` seconds or an HTTP date."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        when = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, when.timestamp() - time.time()) if when else None


def _transport_error(exc: BaseException) -> UpstreamError:
    # httpx-aiohttp maps every aiohttp connection error to ConnectTimeout; look at the cause.
    cause = exc.__cause__
    if isinstance(cause, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError)):
        return UpstreamError("connection_dropped")
    if isinstance(cause, aiohttp.ClientConnectorError) or isinstance(exc, httpx.ConnectError):
        return UpstreamError("connect_error")
    if isinstance(cause, aiohttp.ClientConnectionError):
        return UpstreamError("connection_dropped")
    if isinstance(exc, (httpx.TimeoutException, TimeoutError)):
        return UpstreamError("timeout")
    return UpstreamError("connection_error")


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes


class UpstreamStream(Protocol):
    """An open streaming response whose status was 2xx; iterate raw bytes, then `aclose`.

    Each read is bounded by the deployment's read timeout (a stalled stream fails);
    the stream as a whole is not, since long answers are legitimate.
    """

    def chunks(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class UpstreamClient(Protocol):
    async def send(self, req: UpstreamRequest, timeouts: Timeouts) -> UpstreamResponse: ...

    async def open_stream(self, req: UpstreamRequest, timeouts: Timeouts) -> UpstreamStream: ...

    async def aclose(self) -> None: ...


def _status_error(status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
    return UpstreamError(f"http_{status}", status=status, body=body, retry_after_s=parse_retry_after(headers))


class AiohttpUpstream:
    def __init__(self, max_connections: int = 1000):
        self._session: aiohttp.ClientSession | None = None
        self._max_connections = max_connections
        self._timeouts: dict[int, aiohttp.ClientTimeout] = {}

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:     # created lazily: it must belong to the running loop
            connector = aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(connector=connector, skip_auto_headers=("User-Agent",))
        return self._session

    def _timeout(self, t: Timeouts) -> aiohttp.ClientTimeout:
        cached = self._timeouts.get(id(t))
        if cached is None:
            cached = self._timeouts[id(t)] = aiohttp.ClientTimeout(
                total=t.total_s, sock_connect=t.connect_s, sock_read=t.read_s)
        return cached

    async def send(self, req: UpstreamRequest, timeouts: Timeouts) -> UpstreamResponse:
        try:
            async with self._client().post(req.url, data=req.body, headers=req.headers,
                                           timeout=self._timeout(timeouts)) as resp:
                body = await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _aiohttp_error(exc) from None
        if resp.status >= 300:
            raise _status_error(resp.status, resp.headers, body)
        return UpstreamResponse(resp.status, resp.headers, body)

    async def open_stream(self, req: UpstreamRequest, timeouts: Timeouts) -> UpstreamStream:
        # A stream's total time is not bounded (long answers are fine); connect and each read are.
        t = self._timeout(timeouts)
        timeout = aiohttp.ClientTimeout(sock_connect=t.sock_connect, sock_read=t.sock_read)
        try:
            resp = await self._client().post(req.url, data=req.body, headers=req.headers, timeout=timeout)
            if resp.status >= 300:
                body = await resp.read()
                resp.release()
                raise _status_error(resp.status, resp.headers, body)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _aiohttp_error(exc) from None
        return _AiohttpStream(resp)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class _AiohttpStream:
    def __init__(self, resp: aiohttp.ClientResponse):
        self._resp = resp

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _aiohttp_error(exc) from None

    async def aclose(self) -> None:
        self._resp.close()          # not release(): an unfinished body must not go back to the pool


def _aiohttp_error(exc: BaseException) -> UpstreamError:
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError)):
        return UpstreamError("connection_dropped")
    if isinstance(exc, (TimeoutError, aiohttp.ServerTimeoutError)):
        return UpstreamError("timeout")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamError("connect_error")
    return UpstreamError("connection_error")


class _HttpxStream:
    def __init__(self, response: httpx.Response):
        self.response = response

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.response.aiter_raw():
                yield chunk
        except (httpx.TransportError, TimeoutError, aiohttp.ClientError) as exc:
            raise _transport_error(exc) from None

    async def aclose(self) -> None:
        await self.response.aclose()


class HttpxUpstream:
    def __init__(self, max_connections: int = 1000):
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._client = httpx.AsyncClient(transport=AiohttpTransport(limits=limits), timeout=None)
        self._timeouts: dict[int, httpx.Timeout] = {}

    def _timeout(self, t: Timeouts) -> httpx.Timeout:
        cached = self._timeouts.get(id(t))
        if cached is None:
            cached = httpx.Timeout(connect=t.connect_s, read=t.read_s, write=t.read_s, pool=t.connect_s)
            self._timeouts[id(t)] = cached
        return cached

    async def send(self, req: UpstreamRequest, timeouts: Timeouts) -> UpstreamResponse:
        """One non-streaming request; raises UpstreamError for transport errors and non-2xx."""
        try:
            async with asyncio.timeout(timeouts.total_s):
                resp = await self._client.post(req.url, content=req.body, headers=req.headers,
                                               timeout=self._timeout(timeouts))
        except (httpx.TransportError, TimeoutError, aiohttp.ClientError) as exc:
            raise _transport_error(exc) from None
        if resp.status_code >= 300:
            raise _status_error(resp.status_code, resp.headers, resp.content)
        return UpstreamResponse(resp.status_code, resp.headers, resp.content)

    async def open_stream(self, req: UpstreamRequest, timeouts: Timeouts) -> UpstreamStream:
        """Send a streaming request and wait for a 2xx status; the body is read by the caller."""
        request = self._client.build_request("POST", req.url, content=req.body, headers=req.headers,
                                             timeout=self._timeout(timeouts))
        try:
            async with asyncio.timeout(timeouts.total_s):
                resp = await self._client.send(request, stream=True)
                if resp.status_code >= 300:
                    body = await resp.aread()
                    await resp.aclose()
                    raise _status_error(resp.status_code, resp.headers, body)
        except (httpx.TransportError, TimeoutError, aiohttp.ClientError) as exc:
            raise _transport_error(exc) from None
        return _HttpxStream(resp)

    async def aclose(self) -> None:
        await self._client.aclose()


def _http1_error(exc: BaseException) -> UpstreamError:
    if isinstance(exc, http1.ConnectError):
        return UpstreamError("connect_error")
    if isinstance(exc, http1.ReadTimeout):
        return UpstreamError("timeout")
    if isinstance(exc, http1.ConnectionDropped):
        return UpstreamError("connection_dropped")
    return UpstreamError("connection_error")


class _Http1Stream:
    def __init__(self, response: http1.Response):
        self._response = response

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.iter_chunks():
                yield chunk
        except http1.Http1Error as exc:
            raise _http1_error(exc) from None

    async def aclose(self) -> None:
        self._response.release()    # pooled again only if the body was read whole


class Http1Upstream:
    """`gateway.http1`: keep-alive HTTP/1.1 over asyncio protocols, httptools' parser."""

    def __init__(self, max_connections: int = 1000):
        self._pool = http1.Http1Pool(max_connections)

    async def send(self, req: UpstreamRequest, timeouts: Timeouts) -> UpstreamResponse:
        try:
            resp = await self._pool.request(req.url, req.headers, req.body, connect_s=timeouts.connect_s,
                                            read_s=timeouts.read_s, total_s=timeouts.total_s)
            body = await resp.read()
        except (http1.Http1Error, ValueError) as exc:
            raise _http1_error(exc) from None
        if resp.status >= 300:
            raise _status_error(resp.status, resp.headers, body)
        return UpstreamResponse(resp.status, resp.headers, body)

    async def open_stream(self, req: UpstreamRequest, timeouts: Timeouts) -> UpstreamStream:
        # A stream's total time is not bounded (long answers are fine); connect and each read are.
        try:
            resp = await self._pool.request(req.url, req.headers, req.body, connect_s=timeouts.connect_s,
                                            read_s=timeouts.read_s, total_s=None)
            if resp.status >= 300:
                body = await resp.read()
                raise _status_error(resp.status, resp.headers, body)
        except (http1.Http1Error, ValueError) as exc:
            raise _http1_error(exc) from None
        return _Http1Stream(resp)

    async def aclose(self) -> None:
        await self._pool.aclose()


UPSTREAM_CLIENTS = {"http1": Http1Upstream, "aiohttp": AiohttpUpstream, "httpx": HttpxUpstream}
