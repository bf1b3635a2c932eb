"""The one upstream HTTP client, and the boundary where transport errors get names.

httpx with the aiohttp transport: in a minimal proxy on this machine the default httpx
transport reached 650 requests/s against 2,550 with `httpx-aiohttp` (ENVIRONMENT.md;
re-measured in bench/). One client lives for the app's lifetime; connection pools are
shared by every deployment.

Every failure leaves this module as an `UpstreamError` that says whether a retry on the
same deployment can help (`retryable`) and whether another deployment should be tried
(`fallback`). Routing acts on those two flags and nothing else.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import httpx
import orjson
from httpx_aiohttp import AiohttpTransport

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


def parse_retry_after(headers: httpx.Headers) -> float | None:
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
    headers: httpx.Headers
    body: bytes


class UpstreamStream:
    """An open streaming response whose status was 2xx; iterate raw bytes, then `aclose`.

    Each read is bounded by the deployment's read timeout (a stalled stream fails);
    the stream as a whole is not, since long answers are legitimate.
    """

    def __init__(self, response: httpx.Response):
        self.response = response

    @property
    def headers(self) -> httpx.Headers:
        return self.response.headers

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.response.aiter_raw():
                yield chunk
        except (httpx.TransportError, TimeoutError, aiohttp.ClientError) as exc:
            raise _transport_error(exc) from None

    async def aclose(self) -> None:
        await self.response.aclose()


class UpstreamClient:
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
            raise UpstreamError(f"http_{resp.status_code}", status=resp.status_code, body=resp.content,
                                retry_after_s=parse_retry_after(resp.headers))
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
                    raise UpstreamError(f"http_{resp.status_code}", status=resp.status_code, body=body,
                                        retry_after_s=parse_retry_after(resp.headers))
        except (httpx.TransportError, TimeoutError, aiohttp.ClientError) as exc:
            raise _transport_error(exc) from None
        return UpstreamStream(resp)

    async def aclose(self) -> None:
        await self._client.aclose()
