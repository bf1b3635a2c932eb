"""A deliberately small HTTP/1.1 client over a raw socket, for the fuzzer: it sends bytes
as given (chunked bodies, several requests in one write, bytes no client library would
send) and reads back every response, with a deadline on the whole exchange."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field


class Hang(Exception):
    """The gateway did not finish answering within the deadline."""


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def request_bytes(method: str, path: str, body: bytes, headers: dict[str, str] | None = None, *,
                  chunks: list[int] | None = None, close: bool = False) -> bytes:
    """One request. `chunks`: send the body with Transfer-Encoding: chunked, cut at these sizes."""
    lines = [f"{method} {path} HTTP/1.1", "Host: fuzz"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if chunks is None:
        lines.append(f"Content-Length: {len(body)}")
        payload = body
    else:
        lines.append("Transfer-Encoding: chunked")
        parts, pos = [], 0
        for size in chunks:
            piece = body[pos:pos + size]
            pos += len(piece)
            if piece:
                parts.append(b"%x\r\n%s\r\n" % (len(piece), piece))
        if pos < len(body):
            parts.append(b"%x\r\n%s\r\n" % (len(body) - pos, body[pos:]))
        payload = b"".join(parts) + b"0\r\n\r\n"
    if close:
        lines.append("Connection: close")
    head = "\r\n".join(lines).encode("latin-1", "replace") + b"\r\n\r\n"
    return head + payload


class _Reader:
    def __init__(self, sock: socket.socket, deadline: float):
        self._sock = sock
        self._deadline = deadline
        self._buf = b""
        self.eof = False

    def _fill(self) -> None:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise Hang("no complete response before the deadline")
        self._sock.settimeout(remaining)
        try:
            data = self._sock.recv(65536)
        except TimeoutError:
            raise Hang("no complete response before the deadline") from None
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
        self._buf += data

    def until(self, marker: bytes) -> bytes | None:
        while marker not in self._buf:
            if self.eof:
                return None
            self._fill()
        head, self._buf = self._buf.split(marker, 1)
        return head

    def exactly(self, n: int) -> bytes | None:
        while len(self._buf) < n:
            if self.eof:
                return None
            self._fill()
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def rest(self) -> bytes:
        while not self.eof:
            self._fill()
        out, self._buf = self._buf, b""
        return out

    @property
    def idle(self) -> bool:
        return not self._buf


def _read_response(reader: _Reader) -> RawResponse | None:
    while True:
        head = reader.until(b"\r\n\r\n")
        if head is None:
            return None
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        if status >= 200:
            break                               # 100 Continue: the answer follows
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size_line = reader.until(b"\r\n")
            if size_line is None:
                raise Hang("chunked response cut short")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                reader.until(b"\r\n")
                break
            chunk = reader.exactly(size + 2)
            if chunk is None:
                raise Hang("chunked response cut short")
            parts.append(chunk[:-2])
        body = b"".join(parts)
    elif "content-length" in headers:
        body = reader.exactly(int(headers["content-length"])) or b""
    else:
        body = reader.rest()
    return RawResponse(status, headers, body)


def exchange(host: str, port: int, data: bytes, expected: int, timeout_s: float) -> list[RawResponse]:
    """Send `data` (one or more requests) on a new connection and read up to `expected`
    responses; fewer when the server closes the connection first (it may, after a request
    it cannot parse). Raises Hang when the server neither answers nor closes in time."""
    deadline = time.monotonic() + timeout_s
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.sendall(data)
        reader = _Reader(sock, deadline)
        responses: list[RawResponse] = []
        while len(responses) < expected:
            response = _read_response(reader)
            if response is None:
                break
            responses.append(response)
            if response.headers.get("connection", "").lower() == "close":
                break
        return responses
