"""Length-prefixed frames between gateway workers and the telemetry collector.

Data frames (batches of request rows and trace facts) are marshal: the gateway's rows are
plain tuples of ints, floats, strings, bytes and None (`queued_row()`), and marshal writes
them about 3x faster than pickle. Each entry is encoded on its own when it is queued
(`pack_entry`), so the request's objects die at once instead of living in the queue
until the next frame, and the shipper thread only hands bytes to `sendmsg` (measured: 2 µs
less gateway CPU a request than encoding the batch in the shipper; docs/telemetry.md). A frame is the
marshal encoding of a list whose items are those encodings, so the collector decodes it in
one `marshal.loads`. An entry marshal cannot hold (an object of some other type in it) is
pickled and travels as a bytes item of that list; one pickle cannot hold either has its
odd objects replaced by their text (`plain`), so every entry reaches the collector.
Everything else (hello, flush, stats, report calls, their answers and the collector's
acknowledgements) is pickle. Both ends are Sluice processes of the same user on a
Unix socket in the data directory (mode 0600), never a network peer, so nothing untrusted
is ever decoded.

    frame = length (4 bytes, big-endian) | kind (1 byte) | body
    kind s: data, body = first_seq (8 bytes) | flags (1 byte) | marshal list of entries
    kind p: a pickled message

A data frame's entries are numbered from `first_seq` in the sending gateway process
(`CollectorClient`); flag `RESENT` marks a frame some other collector received before and
may have written (`telemetry.collector` then checks ClickHouse before writing its rows).
"""

from __future__ import annotations

import marshal
import pickle
import socket
import struct
from typing import Any

_HEADER = struct.Struct("!I")
MAX_FRAME = 256 * 1024 * 1024        # a corrupt length must not allocate the machine away
_DATA, _MARSHAL, _PICKLE = b"s", b"m", b"p"
_DATA_HEAD = struct.Struct("!QB")     # first_seq, flags
RESENT = 1
# marshal's list: "[" and a little-endian int32 count, then the items. Items are encoded
# with format version 2, which has no back-references, so independently encoded items
# can be concatenated (versions 3+ number shared objects per dumps() call).
_LIST_HEAD = struct.Struct("<ci")
_ENTRY_VERSION = 2
_IOV_MAX = 1024                      # buffers per sendmsg() (Linux's IOV_MAX)


def pack_entry(entry: tuple) -> bytes:
    """One data entry as bytes for `send_data`: marshal, or (rare) a pickle of it carried
    as marshal bytes. Never raises."""
    try:
        return marshal.dumps(entry, _ENTRY_VERSION)
    except ValueError:
        pass
    try:
        return marshal.dumps(pickle.dumps(entry, protocol=pickle.HIGHEST_PROTOCOL), _ENTRY_VERSION)
    except Exception:
        return marshal.dumps(plain(entry), _ENTRY_VERSION)


def plain(value: Any, depth: int = 0) -> Any:
    """`value` with everything marshal cannot hold replaced by its text (bounded)."""
    kind = type(value)
    if value is None or kind in (int, float, str, bytes, bool, complex):
        return value
    if depth > 20:
        return "<nested too deep>"
    if kind in (tuple, list, set, frozenset) or isinstance(value, (tuple, list)):
        return tuple(plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return {plain(k, depth + 1): plain(v, depth + 1) for k, v in value.items()}
    try:
        return str(value)[:1000]
    except Exception:
        return f"<{kind.__name__}>"


def unpack_entry(packed: bytes | tuple) -> tuple:
    """The entry `pack_entry` made `packed` from."""
    if type(packed) is not bytes:
        return packed
    entry = marshal.loads(packed)
    return pickle.loads(entry) if type(entry) is bytes else entry


def send_frame(sock: socket.socket, message: Any) -> int:
    """Send one message; returns its size in bytes. Blocks until the kernel has it all."""
    return _send(sock, _PICKLE + pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def send_data(sock: socket.socket, packed: list[bytes], first_seq: int = 0, flags: int = 0) -> int:
    """Send `pack_entry()` results, numbered from `first_seq`, as one data frame. Returns
    the bytes sent.

    The frame goes out in one gathering `sendmsg` straight from the entries' bytes: no
    frame-sized buffer is built (large short-lived buffers made glibc raise its mmap
    threshold and fragment the heap), and the shipper thread takes the GIL back once per
    frame, not once per chunk."""
    head = _DATA + _DATA_HEAD.pack(first_seq, flags) + _LIST_HEAD.pack(b"[", len(packed))
    size = len(head) + sum(map(len, packed))
    _send_buffers(sock, [_HEADER.pack(size) + head, *packed])
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
    if kind == _DATA:
        first_seq, flags = _DATA_HEAD.unpack_from(body, 1)
        return ("data", _entries(marshal.loads(memoryview(body)[1 + _DATA_HEAD.size:])), first_seq, flags)
    if kind == _MARSHAL:
        return ("data", _entries(marshal.loads(memoryview(body)[1:])), 0, 0)
    if kind == _PICKLE:
        return pickle.loads(memoryview(body)[1:])
    raise ConnectionError(f"telemetry frame of unknown kind {bytes(kind)!r}: not a Sluice peer")


def _entries(entries: list) -> list:
    """Decoded entries, the pickled ones (bytes items) unpickled."""
    if bytes in set(map(type, entries)):
        return [pickle.loads(e) if type(e) is bytes else e for e in entries]
    return entries


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
