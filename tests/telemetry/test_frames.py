"""Frames between the gateway and the collector: marshal for data, pickle for the rest."""

from __future__ import annotations

import socket
import threading
from array import array
from datetime import datetime, timezone

import pytest

from telemetry import RequestRecord
from telemetry.frames import RESENT, pack_entry, recv_frame, send_data, send_frame, unpack_entry
from telemetry.records import REQUEST_COLUMNS
from telemetry.request_codec import queued_row


@pytest.fixture
def pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    yield a, b
    a.close()
    b.close()


def _row() -> tuple:
    rec = RequestRecord(timestamp=datetime(2026, 11, 24, 12, 0, 0, 123456, tzinfo=timezone.utc),
                        request_id="r1", guardrail_actions=["pii:mask"],
                        prompt_embedding=array("f", [0.5, -1.25]).tobytes(), temperature=0.2)
    return queued_row(rec)


def test_data_frames_round_trip_as_marshal(pair):
    a, b = pair
    trace = ((1 << 127) + 5, 7, None, False, "POST /v1/chat/completions", 1, 2, None,
             {"gen_ai.response.id": "x"}, (("sluice.auth", 1, 2, None),), (("d", "openai", "m", "ok", 200, 1, 2),), None, None)
    entries = [(_row(), trace), (_row(), None)]
    packed = [pack_entry(e) for e in entries]
    assert all(type(p) is bytes for p in packed)
    size = send_data(a, packed, first_seq=41, flags=RESENT)
    message = recv_frame(b)
    assert message == ("data", entries, 41, RESENT)        # entries 41 and 42 of their sender
    # kind byte, first_seq and flags, marshal's list head ("[" and the count), the entries
    assert size == 1 + 9 + 5 + sum(len(p) for p in packed)
    assert [unpack_entry(p) for p in packed] == entries
    row = message[1][0][0]
    assert row[REQUEST_COLUMNS.index("timestamp")] == 1_795_521_600_123_456
    assert row[REQUEST_COLUMNS.index("prompt_embedding")] == array("f", [0.5, -1.25]).tobytes()


def test_an_entry_marshal_cannot_hold_goes_as_pickle_in_the_same_frame(pair):
    a, b = pair
    odd = ((datetime(2026, 1, 1, tzinfo=timezone.utc),), None)        # a datetime: not marshal's
    plain_entry = (("r1", 200), None)
    packed = [pack_entry(plain_entry), pack_entry(odd), pack_entry(plain_entry)]
    assert all(type(p) is bytes for p in packed) and unpack_entry(packed[1]) == odd
    send_data(a, packed, first_seq=7)
    assert recv_frame(b) == ("data", [plain_entry, odd, plain_entry], 7, 0)   # in order, numbered


def test_an_entry_pickle_cannot_hold_arrives_as_text(pair):
    """An object neither marshal nor pickle can hold (a pipeline bug) must not cost the
    request its row: it travels as its text."""
    a, b = pair

    class Unpicklable:
        def __reduce__(self):
            raise TypeError("no")

        def __str__(self):
            return "odd-object"

    packed = pack_entry(((1, Unpicklable(), [2, {"k": Unpicklable()}]), None))
    send_data(a, [packed])
    assert recv_frame(b) == ("data", [((1, "odd-object", (2, {"k": "odd-object"})), None)], 0, 0)


def test_calls_are_pickle_both_ways(pair):
    a, b = pair
    send_frame(a, ("report", "1h", "model"))
    assert recv_frame(b) == ("report", "1h", "model")


def test_a_frame_of_unknown_kind_or_size_closes_the_connection(pair):
    a, b = pair
    a.sendall((3).to_bytes(4, "big") + b"xyz")
    with pytest.raises(ConnectionError, match="unknown kind"):
        recv_frame(b)
    a.sendall((0).to_bytes(4, "big"))
    with pytest.raises(ConnectionError):
        recv_frame(b)


def test_a_large_frame_arrives_whole(pair):
    a, b = pair
    entries = [(("x" * 1000, i), None) for i in range(5000)]          # ~5 MB: several socket reads
    sender = threading.Thread(target=send_data, args=(a, [pack_entry(e) for e in entries]))
    sender.start()
    assert recv_frame(b) == ("data", entries, 0, 0)
    sender.join()


def test_partial_sends_resume_where_the_kernel_stopped():
    """sendmsg() may take less than offered; what it left is sent next, in order."""
    from telemetry.frames import _send_buffers

    class Stingy:
        def __init__(self):
            self.data = bytearray()
            self.calls = 0

        def sendmsg(self, buffers):
            assert len(buffers) <= 1024
            self.calls += 1
            chunk = b"".join(bytes(b) for b in buffers)[:7]      # 7 bytes a call at most
            self.data += chunk
            return len(chunk)

    buffers = [bytes([i % 251]) * (i % 13) for i in range(3000)]
    sock = Stingy()
    _send_buffers(sock, buffers)
    assert bytes(sock.data) == b"".join(buffers)
