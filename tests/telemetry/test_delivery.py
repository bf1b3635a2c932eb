"""The delivery guarantee: every request served is a row in `llm_requests` or a counted drop.

    rows in ClickHouse + sluice_telemetry_rows_dropped_total{queue="requests"} == requests served

exactly, whatever happens to the collector (SIGKILLed under load and restarted) or to
ClickHouse (inserts failing for a while, inserts rejected), and whatever odd value a caller
or a provider puts in a numeric field (docs/telemetry.md, "Delivery").

Real gateways (uvicorn in a thread of this process) with the default collector process on
their own chDB directory; faults are injected into the collector process through a
`sitecustomize` module on its PYTHONPATH (`_insert_faults`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from telemetry.frames import RESENT
from tests.conftest import PRIMARY_KEY
from tests.gateway_server import start_gateway
from tests.telemetry.conftest import metric_value

GATEWAY_KEY = "sluice-delivery-test-secret"
ROOT = Path(__file__).resolve().parents[2]


def _dropped(tel) -> dict[str, float]:
    """The gateway's own count of request rows dropped, by reason."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(tel.metrics.render()[0].decode()):
        for s in family.samples:
            if s.name == "sluice_telemetry_rows_dropped_total" and s.labels.get("queue") == "requests":
                out[s.labels["reason"]] = out.get(s.labels["reason"], 0) + s.value
    return out


def _read_chdb(path: Path, sql: str) -> list:
    """Query a chDB directory from a fresh process (one engine per process and path)."""
    code = ("import json, sys, clickhouse_connect\n"
            f"c = clickhouse_connect.get_client(dsn='chdb://{path}')\n"
            "print(json.dumps(c.query(sys.argv[1]).result_rows, default=str))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_TEST_")}
    done = subprocess.run([sys.executable, "-c", code, sql], capture_output=True, text=True, timeout=300,
                          env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _wait(predicate, timeout_s: float, every_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(every_s)


def _gateway(data_dir: Path, upstream_url: str, **telemetry):
    return start_gateway({
        "data_dir": str(data_dir),
        # normal priority: a collector at SCHED_IDLE on a saturated test machine may not get the CPU
        # to start within any fixed time, and these tests are about delivery, not priority.
        "telemetry": {"collector_priority": "normal", **telemetry},
        "cache": {"enabled": False},
        "keys": [{"key": GATEWAY_KEY, "tenant": "team-d"}],
        "providers": {"primary": {"type": "openai", "base_url": f"{upstream_url}/v1", "api_key": PRIMARY_KEY}},
        "models": {"gpt": {"deployments": [{"provider": "primary", "model": "m1"}]}},
        "router": {"retries": 0},
    })


class Load:
    """Drives `total` chat requests (every fifth streamed) from a few threads; counts what was
    served (any HTTP status: every answered request is owed a row). `at(k, fn)` runs `fn`
    once, as the k-th answer arrives."""

    def __init__(self, url: str, total: int, threads: int = 6) -> None:
        self.url, self.total, self.threads = url, total, threads
        self.statuses: Counter[int] = Counter()
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._hooks: dict[int, object] = {}
        self._local = threading.local()

    def at(self, k: int, fn) -> "Load":
        self._hooks[k] = fn
        return self

    @property
    def served(self) -> int:
        return sum(self.statuses.values())

    def _client(self) -> httpx.Client:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = httpx.Client(
                base_url=self.url, headers={"authorization": f"Bearer {GATEWAY_KEY}"}, timeout=60)
        return client

    def _one(self, i: int) -> None:
        body = {"model": "gpt", "messages": [{"role": "user", "content": f"request {i}"}]}
        try:
            if i % 5 == 0:
                with self._client().stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
                    r.read()
                    status = r.status_code
            else:
                status = self._client().post("/v1/chat/completions", json=body).status_code
        except httpx.HTTPError as exc:       # not answered: not served (and not expected here)
            with self._lock:
                self.errors.append(repr(exc))
            return
        with self._lock:
            self.statuses[status] += 1
            hook = self._hooks.pop(self.served, None)
        if hook is not None:
            hook()

    def run(self) -> "Load":
        with ThreadPoolExecutor(self.threads) as pool:
            list(pool.map(self._one, range(self.total)))
        return self


def _settle(tel, owner, *, restarts: int) -> None:
    """Wait (by condition, not by a fixed time) for the restarted collector and for every
    request handed to telemetry to be written or counted."""
    assert _wait(lambda: owner.restarts >= restarts and owner.alive, 300), "collector not restarted"
    assert _wait(lambda: tel.flush(10), 600, every_s=0.5), "telemetry never flushed"


def _ledger(gw, data_dir: Path) -> tuple[int, int, dict[str, float]]:
    """(rows, distinct request ids, dropped by reason) once the gateway stopped."""
    tel = gw.gateway.telemetry
    gw.stop()
    dropped = _dropped(tel)
    rows, distinct = _read_chdb((data_dir / "clickhouse").resolve(),
                                "SELECT count(), uniqExact(request_id) FROM sluice.llm_requests")[0]
    return int(rows), int(distinct), dropped


# -- the collector SIGKILLed under load ------------------------------------------------------


def test_collector_sigkill_under_load_loses_no_request_uncounted(primary, tmp_path):
    data = tmp_path / "data"
    # Rows wait up to a second in the collector before their insert: a kill always finds some.
    gw = _gateway(data, primary.url, flush_interval_s=1.0)
    tel = gw.gateway.telemetry
    owner = tel.client.owner
    try:
        load = Load(gw.url, total=600)
        load.at(250, lambda: os.kill(owner._process.pid, signal.SIGKILL))
        load.run()
        assert not load.errors and load.served == 600          # serving never depended on it
        _settle(tel, owner, restarts=1)
    finally:
        rows, distinct, dropped = _ledger(gw, data)
    print(f"kill -9 under load: served {load.served}, rows {rows}, dropped {dropped}")
    assert rows == distinct                                   # nothing written twice
    assert rows + sum(dropped.values()) == load.served


def _insert_faults(tmp_path: Path, monkeypatch, kind: str) -> Path:
    """Make the collector's inserts into llm_requests fail while the returned file exists:
    `transient` (a connection-level error: retried) or `rejected` (the server refuses the
    batch: given up after a few tries, counted). A sitecustomize module on PYTHONPATH patches
    the collector process (and any collector restarted later) at start-up."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(
        "import os\n"
        "_marker = os.environ.get('SLUICE_TEST_INSERT_FAULT')\n"
        "if _marker:\n"
        "    from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError\n"
        "    import telemetry.request_codec as _codec\n"
        "    _error = OperationalError if os.environ['SLUICE_TEST_INSERT_FAULT_KIND'] == 'transient' \\\n"
        "        else DatabaseError\n"
        "    _insert = _codec.RequestArrowCodec.insert\n"
        "    def insert(self, client, database, batch):\n"
        "        if os.path.exists(_marker):\n"
        "            raise _error('injected: llm_requests insert failed')\n"
        "        return _insert(self, client, database, batch)\n"
        "    _codec.RequestArrowCodec.insert = insert\n")
    marker = tmp_path / "inserts-fail"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), str(hooks),
                                                                   os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("SLUICE_TEST_INSERT_FAULT", str(marker))
    monkeypatch.setenv("SLUICE_TEST_INSERT_FAULT_KIND", kind)
    return marker


def test_failing_inserts_then_a_sigkill_lose_no_request_uncounted(primary, tmp_path, monkeypatch):
    """ClickHouse refuses inserts (a connection-level error, retried) while the collector is
    SIGKILLed holding everything since: nothing it held may vanish; after recovery each
    request is a row exactly once."""
    marker = _insert_faults(tmp_path, monkeypatch, "transient")
    data = tmp_path / "data"
    gw = _gateway(data, primary.url, flush_interval_s=0.2, retry_backoff_s=0.5)
    tel = gw.gateway.telemetry
    owner = tel.client.owner
    try:
        first = Load(gw.url, total=100).run()
        assert _wait(lambda: tel.flush(10), 600, every_s=0.5)
        marker.touch()                                        # from here on every insert fails
        second = Load(gw.url, total=300).run()
        time.sleep(1.0)                                       # a few failed insert attempts
        os.kill(owner._process.pid, signal.SIGKILL)
        third = Load(gw.url, total=100).run()
        marker.unlink()                                       # ClickHouse is back
        _settle(tel, owner, restarts=1)
    finally:
        rows, distinct, dropped = _ledger(gw, data)
    served = first.served + second.served + third.served
    print(f"failing inserts + kill -9: served {served}, rows {rows}, dropped {dropped}")
    assert served == 500
    assert rows == distinct
    assert rows + sum(dropped.values()) == served


def test_rejected_inserts_are_counted_exactly(primary, tmp_path, monkeypatch):
    """Inserts the server rejects are given up after a few tries: those rows are counted as
    dropped (reason "rejected"), the others written, and the two add up exactly."""
    marker = _insert_faults(tmp_path, monkeypatch, "rejected")
    data = tmp_path / "data"
    gw = _gateway(data, primary.url, flush_interval_s=0.1, retry_backoff_s=0.2)
    tel = gw.gateway.telemetry
    try:
        first = Load(gw.url, total=100).run()
        assert _wait(lambda: tel.flush(10), 600, every_s=0.5)
        marker.touch()
        second = Load(gw.url, total=200).run()
        assert _wait(lambda: tel.flush(10), 600, every_s=0.5)    # given up = resolved
        rejected = _dropped(tel).get("rejected", 0)
        marker.unlink()
        third = Load(gw.url, total=100).run()
        assert _wait(lambda: tel.flush(10), 600, every_s=0.5)
    finally:
        rows, distinct, dropped = _ledger(gw, data)
    served = first.served + second.served + third.served
    print(f"rejected inserts: served {served}, rows {rows}, dropped {dropped}")
    assert served == 400 and rejected == second.served == 200
    assert rows == distinct == 200
    assert rows + sum(dropped.values()) == served


# -- odd values ----------------------------------------------------------------------------


class _OddUpstream(BaseHTTPRequestHandler):
    """An OpenAI-shaped provider whose usage says whatever the model name asks for."""

    protocol_version = "HTTP/1.1"
    USAGE = {"neg": -5, "huge": 2 ** 40, "u64": 2 ** 64 - 1, "str": "12", "float": 1.5, "nan": "NaN",
             "null": None, "list": [1, 2]}

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        value = self.USAGE.get(body["model"], 3)
        reply = json.dumps({
            "id": "chatcmpl-odd", "object": "chat.completion", "created": 1, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "odd"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": value, "completion_tokens": value, "total_tokens": 7,
                      "prompt_tokens_details": {"cached_tokens": value}},
        }).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def odd_upstream():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OddUpstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# Raw request bodies: json.dumps cannot write some of these (2**64 is past orjson's range,
# so the gateway answers 400, which is owed a row too).
ODD_BODIES = {
    "max_tokens=-1": b'"max_tokens": -1',
    "max_tokens=2**32": b'"max_tokens": 4294967296',
    "max_tokens=2**62": b'"max_tokens": 4611686018427387904',
    "max_tokens=2**64-1": b'"max_tokens": 18446744073709551615',
    "max_tokens=2**64": b'"max_tokens": 18446744073709551616',
    "max_tokens=1e308": b'"max_tokens": 1e308',
    "max_tokens=lots": b'"max_tokens": "lots"',
    "max_tokens=true": b'"max_tokens": true',
    "temperature=1e308": b'"temperature": 1e308',
    "temperature=-1e308": b'"temperature": -1e308',
    "temperature=2**62": b'"temperature": 4611686018427387904',
    "temperature=NaN-string": b'"temperature": "NaN"',
    "temperature=Infinity-string": b'"temperature": "Infinity"',
    "temperature=-1": b'"temperature": -1',
    "top_p=1e308": b'"top_p": 1e308',
    "top_p=nan-string": b'"top_p": "nan"',
    "n=2**62": b'"n": 4611686018427387904',
    "n=-1": b'"n": -1',
    "seed=2**64-1": b'"seed": 18446744073709551615',
    "user=number": b'"user": 12',
}


def test_odd_request_values_each_produce_a_row(primary, tmp_path):
    data = tmp_path / "data"
    gw = _gateway(data, primary.url, flush_interval_s=0.1)
    statuses, ids = {}, {}
    try:
        with httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {GATEWAY_KEY}",
                                                    "content-type": "application/json"}, timeout=60) as c:
            for name, field in ODD_BODIES.items():
                body = (b'{"model": "gpt", "messages": [{"role": "user", "content": "' + name.encode()
                        + b'"}], ' + field + b"}")
                response = c.post("/v1/chat/completions", content=body)
                statuses[name] = response.status_code
                ids[response.headers["x-sluice-request-id"]] = name
        assert _wait(lambda: gw.gateway.telemetry.flush(10), 600, every_s=0.5)
    finally:
        rows, distinct, dropped = _ledger(gw, data)
    print(f"odd values: statuses {statuses}, dropped {dropped}")
    assert rows == len(ODD_BODIES) and not dropped
    got = {ids[r[0]]: r for r in _read_chdb((data / "clickhouse").resolve(),
                                            "SELECT request_id, status_code, max_tokens, temperature, "
                                            "toString(anomalies) FROM sluice.llm_requests")}
    assert set(got) == set(ODD_BODIES)
    for name, (_, status, _max_tokens, _temperature, _anomalies) in got.items():
        assert status == statuses[name], name                  # each request, with the answer it got
    # The gateway refuses max_tokens outside 1..2**31-1 (400: a row without the value); what it
    # lets through is stored as given when it fits the column, else clamped and flagged with
    # the value it had.
    assert statuses["temperature=1e308"] == 200
    assert got["temperature=1e308"][3] > 3.4e38 and "1e+308" in got["temperature=1e308"][4]
    assert got["temperature=-1e308"][3] < -3.4e38 and "-1e+308" in got["temperature=-1e308"][4]
    assert got["temperature=2**62"][3] == 2.0 ** 62 and got["temperature=2**62"][4] == "{}"
    assert got["temperature=-1"][3] == -1.0 and got["temperature=-1"][4] == "{}"


def test_odd_provider_usage_each_produces_a_row(odd_upstream, tmp_path):
    data = tmp_path / "data"
    gw = start_gateway({
        "data_dir": str(data),
        "telemetry": {"collector_priority": "normal", "flush_interval_s": 0.1,
                      "prices": {name: {"input": 1.0, "output": 2.0} for name in _OddUpstream.USAGE}},
        "cache": {"enabled": False},
        "keys": [{"key": GATEWAY_KEY, "tenant": "team-d"}],
        "providers": {"odd": {"type": "openai", "base_url": f"{odd_upstream}/v1", "api_key": PRIMARY_KEY}},
        "models": {name: {"deployments": [{"provider": "odd", "model": name}]} for name in _OddUpstream.USAGE},
        "router": {"retries": 0},
    })
    statuses = {}
    try:
        with httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {GATEWAY_KEY}"}, timeout=60) as c:
            for name in _OddUpstream.USAGE:
                statuses[name] = c.post("/v1/chat/completions", json={
                    "model": name, "messages": [{"role": "user", "content": name}]}).status_code
        assert _wait(lambda: gw.gateway.telemetry.flush(10), 600, every_s=0.5)
    finally:
        rows, distinct, dropped = _ledger(gw, data)
    print(f"odd usage: statuses {statuses}, dropped {dropped}")
    assert rows == len(_OddUpstream.USAGE) and not dropped
    got = {r[0]: r for r in _read_chdb((data / "clickhouse").resolve(),
                                       "SELECT public_model, input_tokens, cost_usd, toString(anomalies) "
                                       "FROM sluice.llm_requests")}
    assert got["neg"][1] == 0 and "input_tokens" in got["neg"][3]
    assert got["huge"][1] == 2 ** 32 - 1 and "1099511627776" in got["huge"][3]
    assert got["str"][1] is None and "input_tokens" in got["str"][3]


# Every numeric column, in the writer itself (writer: thread, the session's chDB).
ODD_NUMBERS = [-1, 2 ** 32, 2 ** 62, 2 ** 64, 2 ** 70, -(2 ** 70), 1e308, -1e308, float("nan"), float("inf"),
               float("-inf"), 1.5, True, "NaN", "12", None, b"\x00", [1]]
NUMERIC = ("status_code", "attempts", "latency_ms", "ttft_ms", "gateway_overhead_ms", "input_tokens",
           "output_tokens", "cached_tokens", "cost_usd", "cache_similarity", "guardrail_latency_ms",
           "temperature", "max_tokens")


def test_every_numeric_column_takes_any_value(make_telemetry, ch, database):
    from telemetry import RequestRecord
    tel = make_telemetry()
    n = 0
    for column in NUMERIC:
        for i, value in enumerate(ODD_NUMBERS):
            rec = RequestRecord(request_id=f"{column}-{i}", public_model="m", status_code=200,
                                input_tokens=10, output_tokens=5, cost_usd=None)
            setattr(rec, column, value)
            tel.record(rec)
            n += 1
    # and the non-numeric columns' odd values
    odd_others = {"timestamp": 2 ** 62, "fallback": 3, "stream": "yes", "tenant": 7, "prompt_text": "\ud800 lone",
                  "guardrail_actions": ["pii:mask", 3], "prompt_embedding": b"\x00\x00\x80", "user": None,
                  "error_type": b"\xff\xfe"}
    for column, value in odd_others.items():
        rec = RequestRecord(request_id=f"{column}-x", public_model="m")
        setattr(rec, column, value)
        tel.record(rec)
        n += 1
    rec = RequestRecord(request_id="embedding-after-odd", prompt_embedding=[0.5, 0.25])
    tel.record(rec)
    n += 1
    assert tel.flush(timeout_s=30)
    count, distinct = ch.query(f"SELECT count(), uniqExact(request_id) FROM `{database}`.llm_requests"
                               ).result_rows[0]
    assert (count, distinct) == (n, n)
    assert tel.request_writer.dropped == 0
    flagged = dict(ch.query(f"SELECT request_id, anomalies FROM `{database}`.llm_requests").result_rows)
    # Flagged: every value not stored as given (out of range, not a number, NaN or infinite, a
    # fraction in a count, a boolean, NULL where the column has none), with the value it had.
    not_nullable = {"status_code", "attempts", "latency_ms"}
    for column in NUMERIC:
        if column in ("status_code", "attempts", "input_tokens", "output_tokens", "cached_tokens", "max_tokens"):
            expected = set(range(len(ODD_NUMBERS))) - {15}
        elif column == "cost_usd":
            expected = {8, 9, 10, 12, 13, 14, 16, 17}
        else:                                                       # Float32
            expected = {6, 7, 8, 9, 10, 12, 13, 14, 16, 17}
        if column in not_nullable:
            expected.add(15)
        got = {i for i in range(len(ODD_NUMBERS)) if column in flagged[f"{column}-{i}"]}
        assert got == expected, (column, sorted(got ^ expected))
    for column in odd_others:
        assert column in flagged[f"{column}-x"], (column, flagged[f"{column}-x"])
    assert flagged["max_tokens-0"] == {"max_tokens": "-1"}
    at = {r[0]: r[1:] for r in ch.query(
        f"SELECT request_id, max_tokens, input_tokens, status_code, temperature, latency_ms "
        f"FROM `{database}`.llm_requests").result_rows}
    assert at["max_tokens-0"][0] == 0 and at["max_tokens-1"][0] == 2 ** 32 - 1
    assert at["input_tokens-2"][1] == 2 ** 32 - 1 and at["status_code-1"][2] == 65535
    assert at["temperature-8"][3] is None and at["temperature-6"][3] > 3.4e38
    assert at["max_tokens-15"][0] is None and "max_tokens" not in flagged["max_tokens-15"]   # None is no value
    assert at["status_code-15"][2] == 0 and "status_code" in flagged["status_code-15"]      # not nullable
    emb = dict(ch.query(f"SELECT request_id, prompt_embedding FROM `{database}`.llm_requests").result_rows)
    assert emb["embedding-after-odd"] == [0.5, 0.25]


# -- the acknowledgement protocol, step by step (in process, the session's chDB) ------------


def _entries(first: int, count: int) -> list[tuple]:
    """`count` requests numbered from `first`, each with a sampled trace of two spans."""
    from telemetry.records import RequestRecord
    from telemetry.request_codec import queued_row
    out = []
    for i in range(first, first + count):
        t0 = time.time_ns()
        row = queued_row(RequestRecord(request_id=f"req-{i}", trace_id=f"{i + 1:032x}", span_id=f"{i + 1:016x}",
                                       public_model="m", status_code=200, timestamp=t0 // 1000))
        trace = (i + 1, i + 1, None, False, "POST /v1/chat/completions", t0, t0 + 2_000_000, None, None, (),
                 (("d", "openai", "m1", "ok", 200, t0 + 100, t0 + 1_000_000),), None, None)
        out.append((row, trace))
    return out


@pytest.fixture
def collectors(chdb_url, database, tmp_path):
    """Build `Collector`s as the collector process does, on the session's chDB and a test
    database: several of them stand for one collector and its restarted successor."""
    from telemetry import TelemetryConfig
    from telemetry.clickhouse import open_client
    from telemetry.collector import Collector, WriterStats
    from telemetry.sink import TelemetrySink

    made = []

    def make():
        cfg = TelemetryConfig(clickhouse_url=chdb_url, database=database, flush_interval_s=0.05)
        stats = WriterStats()
        sink = TelemetrySink.from_config(cfg, tmp_path, listener=stats, inline_spans=True,
                                         client_factory=lambda: open_client(chdb_url))
        sink.start()
        made.append(sink)
        return Collector(sink, stats)

    yield make
    for sink in made:
        sink.shutdown(2)


def _count(ch, database) -> tuple[int, int, int]:
    rows, distinct = ch.query(f"SELECT count(), uniqExact(request_id) FROM `{database}`.llm_requests").result_rows[0]
    spans = ch.query(f"SELECT count() FROM `{database}`.otel_traces").result_rows[0][0]
    return rows, distinct, spans


def test_acks_come_after_the_write_with_running_totals(collectors, ch, database):
    collector = collectors()
    ledger, (status, hello) = collector.hello("gw-1", 0, None)
    assert status == "ok" and hello["ack"][2] == 0
    collector.take(ledger, _entries(0, 10), 0, 0)
    collector.take(ledger, _entries(10, 5), 10, 0)
    assert collector.sink.flush(10)
    _, key, acked, written, dropped = ledger.progress()
    assert (acked, written, dropped) == (15, {"requests": 15, "spans": 30}, {})
    assert ledger.progress() is None                     # nothing new: no second ack
    assert _count(ch, database) == (15, 15, 30)
    # The same frame again on this collector (a reconnect): recognised, not written twice.
    collector.take(ledger, _entries(10, 5), 10, 0)
    assert collector.sink.flush(10) and ledger.progress() is None
    assert _count(ch, database) == (15, 15, 30)
    assert collector.stats.snapshot()["written"] == {}    # carried by the acks, not mirrored too


def test_a_frame_written_by_a_dead_collector_is_not_written_again(collectors, ch, database):
    """The collector wrote a frame and died before its ack reached the gateway: the gateway
    resends it (flagged), and the next collector finds its rows and spans in ClickHouse."""
    first = collectors()
    ledger, _ = first.hello("gw-2", 0, None)
    first.take(ledger, _entries(0, 10), 0, 0)
    assert first.sink.flush(10)                          # written; the ack is lost with it
    assert _count(ch, database) == (10, 10, 20)

    second = collectors()                                # the restarted collector
    ledger, (_, hello) = second.hello("gw-2", 0, None)
    assert hello["ack"][1] != ledger.key or hello["ack"][2] == 0
    second.take(ledger, _entries(0, 10), 0, RESENT)
    second.take(ledger, _entries(10, 4), 10, 0)          # and what came after, as usual
    assert second.sink.flush(10)
    _, _, acked, written, dropped = ledger.progress()
    assert (acked, written, dropped) == (14, {"requests": 14, "spans": 28}, {})
    assert _count(ch, database) == (14, 14, 28)


def test_a_frame_half_written_is_completed_once(collectors, ch, database):
    """Of a resent frame, only what is missing is written (a frame can span two inserts)."""
    entries = _entries(0, 10)
    first = collectors()
    ledger, _ = first.hello("gw-3", 0, None)
    first.take(ledger, entries[:6], 0, 0)
    assert first.sink.flush(10)
    second = collectors()
    ledger, _ = second.hello("gw-3", 0, None)
    second.take(ledger, entries, 0, RESENT)
    assert second.sink.flush(10)
    assert ledger.progress()[2:4] == (10, {"requests": 10, "spans": 20})
    assert _count(ch, database) == (10, 10, 20)
    assert sorted(r[0] for r in ch.query(f"SELECT ingest_seq FROM `{database}`.llm_requests").result_rows) \
        == list(range(10))


def test_drops_in_the_collector_are_acknowledged_as_counts(collectors, ch, database):
    """What the collector gives up (its queue full) reaches the gateway in the ack, so a
    later SIGKILL of the collector cannot lose the count."""
    collector = collectors()
    collector.sink.request_writer._queue_max = 6            # room for 6 rows
    ledger, _ = collector.hello("gw-4", 0, None)
    collector.take(ledger, _entries(0, 10), 0, 0)
    assert collector.sink.flush(10)
    _, _, acked, written, dropped = ledger.progress()
    assert acked == 10 and written["requests"] == 6 and dropped == {("requests", "queue_full"): 4}
    assert collector.stats.snapshot()["dropped"] == {}


class FakeCollector:
    """A collector socket that records what it receives and acknowledges only when told."""

    def __init__(self, path: Path, instance: str) -> None:
        import socket as socketlib
        self.instance = instance
        self.frames: list[tuple[int, int, int]] = []      # (first_seq, count, flags)
        self.hellos: list[tuple] = []
        self.conn = None
        self._server = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
        path.unlink(missing_ok=True)
        self._server.bind(str(path))
        self._server.listen()
        self._lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        from telemetry.frames import recv_frame, send_frame
        try:
            conn, _ = self._server.accept()
        except OSError:
            return
        self.conn = conn
        while True:
            try:
                message = recv_frame(conn)
            except (OSError, ConnectionError):
                return
            if message[0] == "hello":
                self.hellos.append(message)
                with self._lock:
                    send_frame(conn, ("ok", {"instance": self.instance, "ack": None}))
            elif message[0] == "data":
                self.frames.append((message[2], len(message[1]), message[3]))
            else:
                with self._lock:
                    send_frame(conn, ("ok", {"instance": self.instance, "depth": {}, "written": {},
                                             "dropped": {}, "failed": {}}))

    def ack(self, upto: int, written: dict, dropped: dict) -> None:
        from telemetry.frames import send_frame
        with self._lock:
            send_frame(self.conn, ("ack", self.instance, upto, written, dropped))

    @property
    def received(self) -> int:
        return sum(count for _, count, _ in self.frames)

    def die(self) -> None:
        import socket as socketlib
        self._server.close()
        if self.conn is not None:
            try:
                self.conn.shutdown(socketlib.SHUT_RDWR)
            except OSError:
                pass
            self.conn.close()


def test_the_gateway_keeps_what_is_unacknowledged_bounded_and_resends_it(tmp_path):
    from telemetry.collector_client import CollectorClient
    from telemetry.metrics import GatewayMetrics
    path = tmp_path / "c.sock"
    fake = FakeCollector(path, "one")
    metrics = GatewayMetrics()
    client = CollectorClient(path, metrics=metrics, queue_max=50, unacked_max=30, interval_s=0.01, max_batch=10)
    client.start(connect_timeout_s=5)
    try:
        row = lambda i: ((f"r{i}",), None)                      # noqa: E731
        for i in range(30):
            client.submit(*row(i))
        assert _wait(lambda: fake.received == 30, 30, every_s=0.01)
        for i in range(30, 100):                                  # nothing more is sent until acked
            client.submit(*row(i))
        time.sleep(0.2)
        text = metrics.render()[0].decode()
        assert fake.received == 30
        assert metric_value(text, "sluice_telemetry_rows_dropped_total", queue="requests", reason="queue_full") == 20
        assert metric_value(text, "sluice_telemetry_queue_depth", queue="requests") == 80

        fake.ack(20, {"requests": 18}, {("requests", "rejected"): 2})
        assert _wait(lambda: fake.received == 50, 30, every_s=0.01)   # 20 more went out
        text = metrics.render()[0].decode()
        assert metric_value(text, "sluice_telemetry_rows_written_total", queue="requests") == 18
        assert metric_value(text, "sluice_telemetry_rows_dropped_total", queue="requests", reason="rejected") == 2

        fake.die()                                                # 30 sent, none acknowledged
        second = FakeCollector(path, "two")
        assert _wait(lambda: second.received == 30, 60, every_s=0.05)   # resent, first of all
        assert second.hellos[0][2] == 20                          # the oldest it still holds
        assert [(first, flags) for first, _, flags in second.frames] == [(20, RESENT), (30, RESENT), (40, RESENT)]
        second.ack(50, {"requests": 30}, {})
        assert _wait(lambda: second.received == 60, 30, every_s=0.01)
        assert all(flags == 0 for first, _, flags in second.frames if first >= 50)   # new: sent here only
        # the new collector's totals start from zero: they add to what the first one reported
        second.ack(80, {"requests": 55}, {("requests", "rejected"): 5})
        assert _wait(lambda: metric_value(metrics.render()[0].decode(), "sluice_telemetry_rows_written_total",
                                     queue="requests") == 18 + 55, 30)
        assert metric_value(metrics.render()[0].decode(), "sluice_telemetry_rows_dropped_total", queue="requests",
                       reason="rejected") == 2 + 5
    finally:
        client._stopping = True
        fake.die()


def test_an_insert_that_failed_after_writing_is_not_written_twice(collectors, ch, database):
    """A ClickHouse server may commit an insert and time out before it says so: the retry
    leaves out the rows it finds (rows the collector can recognise: a gateway's)."""
    from clickhouse_connect.driver.exceptions import OperationalError
    collector = collectors()
    codec = collector.sink.request_writer._codec
    insert, failed = codec.insert, []

    def insert_then_fail(client, database, batch):
        insert(client, database, batch)
        if not failed:
            failed.append(batch.num_rows)
            raise OperationalError("injected: the connection dropped after the insert")

    codec.insert = insert_then_fail
    ledger, _ = collector.hello("gw-5", 0, None)
    collector.take(ledger, _entries(0, 8), 0, 0)
    assert collector.sink.flush(30)
    assert failed == [8]
    assert ledger.progress()[2:] == (8, {"requests": 8, "spans": 16}, {})
    assert _count(ch, database) == (8, 8, 16)
