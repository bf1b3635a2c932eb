"""Frames between the gateway and the collector: marshal for data, pickle for the rest."""

from __future__ import annotations

import marshal
import socket
import threading
from array import array
from datetime import datetime, timezone

import pytest

from telemetry import RequestRecord
from telemetry.frames import recv_frame, send_data, send_frame
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
             {"gen_ai.response.id": "x"}, (("sluice.auth", 1, 2, None),), (("d", "openai", "m", "ok", 200, 1, 2),), None)
    entries = [(_row(), trace), (_row(), None)]
    size = send_data(a, entries)
    message = recv_frame(b)
    assert message == ("data", entries)
    assert size == 1 + len(marshal.dumps(entries))          # the marshal body behind its kind byte
    row = message[1][0][0]
    assert row[REQUEST_COLUMNS.index("timestamp")] == 1_795_521_600_123_456
    assert row[REQUEST_COLUMNS.index("prompt_embedding")] == array("f", [0.5, -1.25]).tobytes()


def test_a_batch_marshal_cannot_hold_goes_as_pickle(pair):
    a, b = pair
    entries = [((datetime(2026, 1, 1, tzinfo=timezone.utc),), None)]   # a datetime: not marshal's
    send_data(a, entries)
    assert recv_frame(b) == ("data", entries)


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
    sender = threading.Thread(target=send_data, args=(a, entries))
    sender.start()
    assert recv_frame(b) == ("data", entries)
    sender.join()
