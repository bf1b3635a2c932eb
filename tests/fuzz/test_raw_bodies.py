"""Hypothesis drives raw requests at the live gateway over a plain socket.

Bodies start from a valid request of each endpoint and are bent: wrong types, huge and
out-of-range numbers, deep nesting, too many messages, NUL bytes, lone surrogates,
invalid UTF-8, duplicate keys, number literals JSON forbids, truncation, random bytes.
They go out with Content-Length, chunked in random pieces, or several pipelined on one
connection. Every request must be answered within its deadline (no hang), never with a
5xx unless the model's deployments are configured to fail, errors in the endpoint's
wire format, streams ending with their terminal or error event. Afterwards the gateway
must still answer, have logged no error, and hold about the memory it held before.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import orjson
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from tests.fuzz.rawhttp import Hang, RawResponse, exchange, request_bytes
from tests.fuzz.target import FAULTY_MODELS, HEALTHY_MODELS, FuzzTarget, examples

TIMEOUT_S = 15.0
RSS_GROWTH_LIMIT = 64 * 1024 * 1024     # the cache's 4 MiB and the allocator's slack

ENDPOINTS = {
    "/v1/chat/completions": {"messages": [{"role": "user", "content": "hi"}]},
    "/v1/messages": {"max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]},
    "/v1/embeddings": {"input": "hi"},
    "/v1/responses": {"input": "hi"},
}
ANTHROPIC_PATHS = ("/v1/messages",)
FIELDS = ("model", "messages", "stream", "n", "max_tokens", "max_completion_tokens", "max_output_tokens",
          "temperature", "top_p", "tools", "tool_choice", "stream_options", "system", "input",
          "response_format", "stop", "metadata", "user", "seed", "logit_bias", "cache_control")
MESSAGE_FIELDS = ("role", "content", "name", "tool_calls", "tool_call_id", "cache_control")
EDGE_INTS = (-(2**63), -(2**31), -1, 0, 1, 16, 17, 128, 129, 2**31 - 1, 2**31, 2**53 + 1, 2**62,
             2**63 - 1, 2**63, 2**64 - 1)
DEPTHS = (62, 63, 64, 65, 66, 200, 253, 254, 255, 256, 300, 1000, 1023, 1024, 1025, 1100)
BAD_LITERALS = (b"1e999", b"-1e999", b"NaN", b"Infinity", b"-Infinity", b"1" + b"0" * 400, b"-0",
                b"0x10", b"01", b"1.", b".5", b"+1", b'"\\ud800"', b'"\\udc00x"', b'"\\u0000"',
                b"tru", b"nul", b'"\xff\xfe"', b'"\xc0\x80"', b'"\xed\xa0\x80"')

# Text with everything in it: NUL, control characters, lone surrogates (sent either
# escaped, or raw as invalid UTF-8).
texts = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
scalars = (st.none() | st.booleans() | st.sampled_from(EDGE_INTS) | st.integers()
           | st.floats(allow_nan=False, allow_infinity=False) | texts)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(texts, inner, max_size=4), max_leaves=16)


def nested(depth: int, as_dict: bool) -> object:
    value: object = 1
    for _ in range(depth - 1):
        value = {"a": value} if as_dict else [value]
    return value


@st.composite
def bodies(draw: st.DrawFn, path: str) -> tuple[bytes, bool]:
    """A request body for `path` and whether its model is configured to fail."""
    model = draw(st.sampled_from(HEALTHY_MODELS + FAULTY_MODELS) | texts)
    body: dict = {"model": model, **orjson.loads(orjson.dumps(ENDPOINTS[path]))}
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["field", "message", "deep", "messages", "stream"]))
        if kind == "field":
            body[draw(st.sampled_from(FIELDS) | texts)] = draw(json_values)
        elif kind == "message" and isinstance(body.get("messages"), list) and body["messages"]:
            message = body["messages"][0]
            if isinstance(message, dict):
                message[draw(st.sampled_from(MESSAGE_FIELDS))] = draw(json_values)
        elif kind == "deep":
            body[draw(st.sampled_from(FIELDS))] = nested(draw(st.sampled_from(DEPTHS)), draw(st.booleans()))
        elif kind == "messages":
            count = draw(st.sampled_from((0, 1, 2047, 2048, 2049, 5000)))
            body["messages" if path != "/v1/responses" else "input"] = (
                [{"role": "user", "content": "x"}] * count)
        else:
            body["stream"] = True
    ascii_only = draw(st.booleans())
    raw = json.dumps(body, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    mutation = draw(st.sampled_from(["none"] * 6 + ["dup_key", "insert", "truncate", "literal", "random"]))
    if mutation == "dup_key":           # a key again, with another value (orjson keeps the last)
        extra = json.dumps({draw(st.sampled_from(FIELDS)): draw(json_values)})[1:-1]
        raw = raw[:-1] + b", " + extra.encode("utf-8", "surrogatepass") + b"}" if extra else raw
    elif mutation == "insert":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.binary(min_size=1, max_size=8)) + raw[at:]
    elif mutation == "truncate":
        raw = raw[:draw(st.integers(0, max(0, len(raw) - 1)))]
    elif mutation == "literal":
        raw = raw[:-1] + b', "' + draw(st.sampled_from(FIELDS)).encode() + b'": ' + draw(
            st.sampled_from(BAD_LITERALS)) + b"}"
    elif mutation == "random":
        raw = draw(st.binary(max_size=200))
    return raw, model in FAULTY_MODELS


CONTENT_TYPES = ("application/json", "text/plain", "", "application/json; charset=latin-1")
header_values = st.text(st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=30)


@dataclass
class Sent:
    path: str
    faulty: bool


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, list[Sent]]:
    """One connection's worth: 1-3 requests (pipelined), bodies sent with Content-Length or
    chunked at random cuts."""
    count = draw(st.sampled_from([1, 1, 1, 2, 3]))
    data, sent = b"", []
    for i in range(count):
        path = draw(st.sampled_from(list(ENDPOINTS)))
        method = draw(st.sampled_from(["POST"] * 12 + ["GET", "PUT", "DELETE", "PATCH"]))
        raw, faulty = draw(bodies(path))
        headers = {"Content-Type": draw(st.sampled_from(CONTENT_TYPES))}
        if draw(st.booleans()):
            headers[draw(st.sampled_from(["x-sluice-cache", "anthropic-version", "authorization", "x-api-key",
                                          "user-agent", "x-sluice-fuzz\x00"]))] = draw(header_values)
        if draw(st.integers(0, 9)) == 0:
            headers["Expect"] = "100-continue"
        chunks = draw(st.none() | st.lists(st.integers(1, 64), max_size=6))
        query = draw(st.sampled_from(["", "", "", "?x=1", "?stream=true"]))
        data += request_bytes(method, path + query, raw, headers, chunks=chunks, close=i == count - 1)
        sent.append(Sent(path, faulty))
    return data, sent


def check_response(sent: Sent, response: RawResponse) -> None:
    status = response.status
    if status >= 500:
        assert sent.faulty and status in (502, 503, 504), (status, response.body[:500])
    content_type = response.headers.get("content-type", "")
    if content_type.startswith("text/event-stream"):
        # A stream ends with its terminal event, or an error event, never just stops.
        tail = response.body[-4096:]
        if sent.path in ANTHROPIC_PATHS:
            assert b"event: message_stop" in tail or b"event: error" in tail, tail[-500:]
        else:
            assert b"data: [DONE]" in tail or b'"error"' in tail or b"response.completed" in tail, tail[-500:]
    elif content_type.startswith("application/json"):
        body = orjson.loads(response.body)
        if status >= 400 and sent.path in ENDPOINTS:
            if sent.path in ANTHROPIC_PATHS and status != 405:
                assert body.get("type") == "error" and {"type", "message"} <= set(body["error"]), body
            elif status != 405:
                assert {"message"} <= set(body["error"]), body


class Tally:
    def __init__(self) -> None:
        self.connections = self.requests = self.responses = self.server_errors = self.hangs = 0

    def __str__(self) -> str:
        return (f"{self.requests} requests on {self.connections} connections, {self.responses} responses, "
                f"{self.server_errors} 5xx, {self.hangs} hangs")


def fuzz(target: FuzzTarget, n: int) -> Tally:
    host, port = target.host_port
    tally = Tally()

    def one_connection(case: tuple[bytes, list[Sent]]) -> None:
        data, sent = case
        tally.connections += 1
        tally.requests += len(sent)
        try:
            responses = exchange(host, port, data, len(sent), TIMEOUT_S)
        except Hang:
            tally.hangs += 1
            raise
        assert responses, "the connection closed without any response"
        tally.responses += len(responses)
        for request, response in zip(sent, responses):
            tally.server_errors += response.status >= 500
            check_response(request, response)

    # A fixed seed: the same requests every run, unless SLUICE_FUZZ_SEED asks for others.
    fixed = os.environ.get("SLUICE_FUZZ_SEED")
    test = given(requests())(one_connection)
    if fixed:
        test = seed(int(fixed))(test)
    settings(max_examples=n, deadline=None, derandomize=not fixed, database=None, print_blob=True,
             suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                    HealthCheck.filter_too_much])(test)()
    return tally


def _run(target: FuzzTarget, n: int) -> None:
    target.assert_healthy()              # warm: first-request allocations are not growth
    before = target.rss_bytes()
    tally = fuzz(target, n)
    target.assert_healthy()
    growth = target.rss_bytes() - before
    print(f"\nraw fuzz: {tally}; RSS growth {growth / 2**20:.1f} MiB")
    assert tally.hangs == 0
    assert growth < RSS_GROWTH_LIMIT, f"RSS grew by {growth / 2**20:.0f} MiB"


def test_raw_bodies_never_5xx_nor_hang(fuzz_target, request):
    _run(fuzz_target, examples(1000, 1000, request))


@pytest.mark.fuzz_long
def test_raw_bodies_never_5xx_nor_hang_long(fuzz_target, request):
    _run(fuzz_target, examples(1000, 20000, request))
