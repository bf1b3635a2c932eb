"""Length-prefixed frames between gateway workers and the telemetry collector.

Data frames (batches of request rows and trace facts) are marshal: the gateway's rows are
plain tuples of ints, floats, strings, bytes and None (`queued_row()`), and marshal writes
them about 3x faster than pickle. Each entry is encoded on its own when it is queued
(`pack_entry`), so the request's objects die at once instead of living in the queue
until the next frame, and the shipper thread only hands bytes to `sendmsg` (measured: 2 µs
less gateway CPU a request than encoding the batch in the shipper; docs/telemetry.md). A frame is the
marshal encoding of a list whose items are those encodings, so the collector decodes it in
one `marshal.loads`. Everything else (flush, stats, report calls and their answers), and an
entry marshal cannot hold, is pickle. Both ends are Sluice processes of the same user on a
Unix socket in the data directory (mode 0600), never a network peer, so nothing untrusted
is ever decoded.

    frame = length (4 bytes, big-endian) | kind (1 byte: m = marshal data, p = pickle) | body
"""

from __future__ import annotations

import marshal
import pickle
import socket
import struct
from typing import Any

_HEADER = struct.Struct("!I")
MAX_FRAME = 256 * 1024 * 1024        # a corrupt length must not allocate the machine away
_MARSHAL, _PICKLE = b"m", b"p"
# marshal's list: "[" and a little-endian int32 count, then the items. Items are encoded
# with format version 2, which has no back-references, so independently encoded items
# can be concatenated (versions 3+ number shared objects per dumps() call).
_LIST_HEAD = struct.Struct("<ci")
_ENTRY_VERSION = 2
_IOV_MAX = 1024                      # buffers per sendmsg() (Linux's IOV_MAX)


def pack_entry(entry: tuple) -> bytes | tuple:
    """One data entry as marshal bytes for `send_data`, or the entry itself when marshal
    cannot hold it (it then goes as pickle)."""
    try:
        return marshal.dumps(entry, _ENTRY_VERSION)
    except ValueError:
        return entry


def unpack_entry(packed: bytes | tuple) -> tuple:
    """The entry `pack_entry` made `packed` from."""
    return marshal.loads(packed) if type(packed) is bytes else packed


def send_frame(sock: socket.socket, message: Any) -> int:
    """Send one message; returns its size in bytes. Blocks until the kernel has it all."""
    return _send(sock, _PICKLE + pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def send_data(sock: socket.socket, packed: list[bytes | tuple]) -> int:
    """Send `pack_entry()` results as ("data", entries) messages: one marshal frame, and
    a pickle frame for the entries marshal could not hold. Returns the bytes sent.

    The marshal frame goes out in one gathering `sendmsg` straight from the entries'
    bytes: no frame-sized buffer is built (large short-lived buffers made glibc raise its
    mmap threshold and fragment the heap), and the shipper thread takes the GIL back once
    per frame, not once per chunk."""
    blobs = [p for p in packed if type(p) is bytes]
    size = 0
    if blobs:
        head = _MARSHAL + _LIST_HEAD.pack(b"[", len(blobs))
        size = len(head) + sum(map(len, blobs))
        _send_buffers(sock, [_HEADER.pack(size) + head, *blobs])
    if len(blobs) < len(packed):
        size += send_frame(sock, ("data", [p for p in packed if type(p) is not bytes]))
    return size


def _send_buffers(sock: socket.socket, buffers: list[bytes]) -> None:
    """sendall() for a list of buffers, IOV_MAX of them per system call."""
    views = [memoryview(b) for b in buffers]
    while views:
        batch = views[:_IOV_MAX]
        sent = sock.sendmsg(batch)
        # Drop what went out; a partly sent buffer (the kernel took less: rare on a
        # blocking socket) keeps its tail.
        i = 0
        while i < len(batch) and sent >= len(batch[i]):
            sent -= len(batch[i])
            i += 1
        if i < len(batch):
            views[i] = views[i][sent:]
        del views[:i]


def _send(sock: socket.socket, body: bytes) -> int:
    sock.sendall(_HEADER.pack(len(body)) + body)
    return len(body)


def recv_frame(sock: socket.socket) -> Any:
    """The next message; raises ConnectionError when the peer closed the socket."""
    (size,) = _HEADER.unpack(_recv_exactly(sock, _HEADER.size))
    if size > MAX_FRAME or size == 0:
        raise ConnectionError(f"telemetry frame of {size} bytes: not a Sluice peer")
    body = _recv_exactly(sock, size)
    kind = body[:1]
    if kind == _MARSHAL:
        return ("data", marshal.loads(memoryview(body)[1:]))
    if kind == _PICKLE:
        return pickle.loads(memoryview(body)[1:])
    raise ConnectionError(f"telemetry frame of unknown kind {bytes(kind)!r}: not a Sluice peer")


def _recv_exactly(sock: socket.socket, size: int) -> bytearray:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:], size - got)
        if n == 0:
            raise ConnectionError("telemetry peer closed the connection")
        got += n
    return buffer
