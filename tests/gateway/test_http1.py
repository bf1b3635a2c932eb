"""gateway/http1.py against real sockets: small asyncio servers that misbehave on purpose,
and a TLS server with a certificate made for the test."""

from __future__ import annotations

import asyncio
import datetime
import ssl
from collections.abc import Awaitable, Callable

import pytest

from gateway.http1 import ConnectError, ConnectionDropped, Http1Pool, ReadTimeout

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}"


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    return head + await reader.readexactly(length)


class Server:
    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.connections = 0
        self.requests: list[bytes] = []

    async def __aenter__(self) -> Server:
        async def on_connect(reader, writer):
            self.connections += 1
            try:
                await self.handler(reader, writer)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        self._server = await asyncio.start_server(on_connect, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()

    def url(self, scheme: str = "http") -> str:
        host = "localhost" if scheme == "https" else "127.0.0.1"
        return f"{scheme}://{host}:{self.port}/v1/chat/completions"


def keep_alive(answer: bytes, recorder: list[bytes] | None = None) -> Handler:
    async def handler(reader, writer):
        while True:
            request = await read_request(reader)
            if recorder is not None:
                recorder.append(request)
            writer.write(answer)
            await writer.drain()
    return handler


async def post(pool: Http1Pool, url: str, body: bytes = b"{}", read_s: float = 5.0, total_s: float | None = 10.0,
               headers: dict | None = None) -> tuple[int, bytes]:
    response = await pool.request(url, headers or {"content-type": "application/json"}, body,
                                  connect_s=2.0, read_s=read_s, total_s=total_s)
    return response.status, await response.read()


async def test_keep_alive_reuses_one_connection_and_sends_a_well_formed_request():
    recorded: list[bytes] = []
    async with Server(keep_alive(OK, recorded)) as server:
        pool = Http1Pool()
        for _ in range(10):
            assert await post(pool, server.url(), b'{"a": 1}', headers={"authorization": "Bearer k"}) == (200, b"{}")
        assert server.connections == 1
        head, _, body = recorded[0].partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        assert lines[0] == b"POST /v1/chat/completions HTTP/1.1"
        assert {b"host: 127.0.0.1:%d" % server.port, b"content-length: 8", b"authorization: Bearer k"} <= set(lines)
        assert body == b'{"a": 1}'
        await pool.aclose()


async def test_chunked_stream_arrives_piece_by_piece():
    release = asyncio.Event()

    async def handler(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/event-stream\r\n\r\n")
        writer.write(b"6\r\ndata 1\r\n")
        await writer.drain()
        await release.wait()
        writer.write(b"6\r\ndata 2\r\n0\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with Server(handler) as server:
        pool = Http1Pool()
        response = await pool.request(server.url(), {}, b"{}", connect_s=2, read_s=5, total_s=None)
        chunks = response.iter_chunks()
        assert await chunks.__anext__() == b"data 1"          # before the rest was even sent
        release.set()
        assert [c async for c in chunks] == [b"data 2"]
        assert pool.open_connections == 1                     # whole: back in the pool
        await pool.aclose()


async def test_a_connection_the_server_closed_while_idle_is_retried_once_on_a_fresh_one():
    async def handler(reader, writer):
        await read_request(reader)
        writer.write(OK)                       # keep-alive by default, then the server hangs up
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.transport.abort()

    async with Server(handler) as server:
        pool = Http1Pool()
        assert await post(pool, server.url()) == (200, b"{}")
        await asyncio.sleep(0.01)             # the close may still be in flight when reused
        assert await post(pool, server.url()) == (200, b"{}")
        assert server.connections == 2
        await pool.aclose()


async def test_read_timeout_total_timeout_and_a_drop_have_their_own_errors():
    async def stall(reader, writer):
        await read_request(reader)
        await asyncio.sleep(5)

    async def trickle(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n")
        for _ in range(50):
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(0.05)

    async def drop(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
        await writer.drain()
        writer.transport.abort()

    pool = Http1Pool()
    async with Server(stall) as server:
        with pytest.raises(ReadTimeout, match="read timeout"):
            await post(pool, server.url(), read_s=0.2)
    async with Server(trickle) as server:          # bytes keep coming: only the total bounds it
        with pytest.raises(ReadTimeout, match="total timeout"):
            await post(pool, server.url(), read_s=1.0, total_s=0.5)
    async with Server(drop) as server:
        with pytest.raises(ConnectionDropped):
            await post(pool, server.url())
    assert pool.open_connections == 0
    await pool.aclose()


async def test_connect_errors_and_header_injection():
    pool = Http1Pool()
    with socket_closed() as port:
        with pytest.raises(ConnectError):
            await post(pool, f"http://127.0.0.1:{port}/v1/x")
    with pytest.raises(ValueError, match="line break"):
        await post(pool, "http://127.0.0.1:9/v1/x", headers={"anthropic-beta": "x\r\nevil: 1"})
    assert pool.open_connections == 0


async def test_the_connection_limit_queues_requests_instead_of_failing():
    active = 0
    peak = 0

    async def handler(reader, writer):
        nonlocal active, peak
        while True:
            await read_request(reader)
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.02)
            active -= 1
            writer.write(OK)
            await writer.drain()

    async with Server(handler) as server:
        pool = Http1Pool(max_connections=2)
        results = await asyncio.gather(*(post(pool, server.url()) for _ in range(8)))
        assert results == [(200, b"{}")] * 8
        assert server.connections == 2 and peak == 2
        await pool.aclose()


async def test_a_cancelled_read_closes_the_connection_instead_of_pooling_it():
    async def handler(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
        await writer.drain()
        await asyncio.sleep(5)

    async with Server(handler) as server:
        pool = Http1Pool()
        response = await pool.request(server.url(), {}, b"{}", connect_s=2, read_s=5, total_s=None)
        task = asyncio.ensure_future(response.read())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pool.open_connections == 0
        await pool.aclose()


async def test_https_with_sni_and_certificate_verification(tmp_path):
    cert, key = self_signed_certificate(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    async with Server(keep_alive(OK), tls=server_tls) as server:
        trusting = ssl.create_default_context(cafile=str(cert))
        pool = Http1Pool(ssl_context=trusting)
        assert await post(pool, server.url("https")) == (200, b"{}")
        assert await post(pool, server.url("https")) == (200, b"{}")
        assert server.connections == 1
        await pool.aclose()
        strict = Http1Pool()                              # system CAs: the test's cert is not trusted
        with pytest.raises(ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await post(strict, server.url("https"))


class socket_closed:
    """A port nothing listens on."""

    def __enter__(self) -> int:
        import socket
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def __exit__(self, *exc: object) -> None:
        pass


def self_signed_certificate(directory):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_origins_parse_once_with_the_right_host_header():
    from gateway.http1 import origin_of
    assert origin_of("https://api.openai.com/v1/chat/completions").host_header == "api.openai.com"
    assert origin_of("http://[::1]:8080/v1/x?api-version=1").host_header == "[::1]:8080"
    assert origin_of("http://[::1]:8080/v1/x?api-version=1").target == "/v1/x?api-version=1"
    with pytest.raises(ValueError, match="not an http"):
        origin_of("ftp://example.com/x")


async def test_connection_close_answers_are_not_pooled_and_error_bodies_come_through():
    answer = (b"HTTP/1.1 429 Too Many Requests\r\nconnection: close\r\nretry-after: 2\r\n"
              b"content-length: 27\r\n\r\n{\"error\": {\"message\": \"x\"}}")

    async def handler(reader, writer):
        await read_request(reader)
        writer.write(answer)
        await writer.drain()
        await reader.read()           # the client closes: it must not wait for more

    async with Server(handler) as server:
        pool = Http1Pool()
        for _ in range(2):
            response = await pool.request(server.url(), {}, b"{}", connect_s=2, read_s=2, total_s=5)
            assert (response.status, response.headers["retry-after"]) == (429, "2")
            assert await response.read() == b'{"error": {"message": "x"}}'
        assert server.connections == 2 and pool.open_connections == 0
        await pool.aclose()
