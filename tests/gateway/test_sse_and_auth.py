import pytest

from gateway.auth import KeyStore, hash_key
from gateway.config import KeyConfig
from gateway.errors import Unauthorized
from gateway.sse import SSEBuffer, event_data


def test_sse_buffer_reassembles_events_split_anywhere():
    stream = b'data: {"a": 1}\n\ndata: {"b": 2}\n\nevent: x\ndata: {"c": 3}\n\ndata: [DONE]\n\n'
    for cut in range(1, len(stream)):
        buf = SSEBuffer()
        events = buf.feed(stream[:cut]) + buf.feed(stream[cut:])
        assert [event_data(e) for e in events] == [b'{"a": 1}', b'{"b": 2}', b'{"c": 3}', b"[DONE]"]


def test_sse_crlf():
    buf = SSEBuffer()
    assert [event_data(e) for e in buf.feed(b"data: 1\r\n\r\ndata: 2\r\n\r\n")] == [b"1", b"2"]


def test_keys_are_hashed_and_resolved():
    store = KeyStore([KeyConfig(key="secret-a", tenant="team-a", models=["m"]),
                      KeyConfig(key_sha256=hash_key("secret-b"), tenant="team-b", name="b-key")])
    assert "secret-a" not in repr(store.__dict__)
    p = store.authenticate([(b"authorization", b"Bearer secret-a")])
    assert p.tenant == "team-a" and p.allows("m") and not p.allows("other")
    assert store.authenticate([(b"x-api-key", b"secret-b")]).key_id == "b-key"
    with pytest.raises(Unauthorized):
        store.authenticate([(b"authorization", b"Bearer nope")])
    with pytest.raises(Unauthorized):
        store.authenticate([])
