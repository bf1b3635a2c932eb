"""Length-prefixed pickle frames between gateway workers and the telemetry collector.

Pickle because the payload is the gateway's own tuples (rows, trace facts): it is the
fastest encoding of them in CPython and needs no schema of its own. Both ends are Sluice
processes of the same user on a Unix socket in the data directory (mode 0600), never a
network peer, so nothing untrusted is ever unpickled.
"""

from __future__ import annotations

import pickle
import socket
import struct
from typing import Any

_HEADER = struct.Struct("!I")
MAX_FRAME = 256 * 1024 * 1024        # a corrupt length must not allocate the machine away


def send_frame(sock: socket.socket, message: Any) -> int:
    """Send one message; returns its size in bytes. Blocks until the kernel has it all."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(_HEADER.pack(len(data)) + data)
    return len(data)


def recv_frame(sock: socket.socket) -> Any:
    """The next message; raises ConnectionError when the peer closed the socket."""
    (size,) = _HEADER.unpack(_recv_exactly(sock, _HEADER.size))
    if size > MAX_FRAME:
        raise ConnectionError(f"telemetry frame of {size} bytes: not a Sluice peer")
    return pickle.loads(_recv_exactly(sock, size))


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
