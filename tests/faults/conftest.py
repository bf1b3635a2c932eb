"""The fault suite: one gateway with every feature on, traffic from several tenants, one
fault at a time.

    tenants   team-a: the tenant a fault is aimed at (its own upstream models and guardrail
              policies), OpenAI and Anthropic SDKs
              team-b: OpenAI SDK, team-c: Anthropic SDK; both keep sending requests in the
              background through every fault (`Background`)
    gateway   uvicorn in a thread of this process; the default telemetry collector process
              on chDB in its own data directory; the semantic cache on a real Redis of its
              own (the Redis test kills it); PII guardrails per tenant and model
    providers the session's mock providers (tests/conftest.py): `primary` speaks OpenAI,
              `backup` Anthropic; faults are set on team-a's upstream models only

Accounting (`FaultGateway.accounted`): every request a client got an answer to is
`served`; once telemetry has caught up,

    rows in llm_requests (the collector's report) + sluice_telemetry_rows_dropped_total{queue="requests"} == served

Each test adds a row to the fault table printed at the end of the run
(`pytest_terminal_summary`): fault, what the client saw, the other tenants, the
accounting, recovered without a restart.
"""

from __future__ import annotations

import itertools
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import BACKUP_KEY, PRIMARY_KEY, Mock
from tests.gateway_server import RunningGateway, start_gateway
from tests.redis_server import RedisServer, start_redis

KEYS = {"team-a": "sluice-fault-a-secret", "team-b": "sluice-fault-b-secret", "team-c": "sluice-fault-c-secret"}
# team-a's public models: one with a fallback deployment, one without, one whose
# guardrails fail open. Their upstream models are the ones faults are set on.
A_FALLBACK, A_SOLO, A_OPEN = "a-chat", "a-solo", "a-open"
A_UPSTREAM = ("ma", "ma-solo", "ma-open")
OTHERS = {"team-b": ("b-chat", "openai"), "team-c": ("c-chat", "anthropic")}
# What the caller waits for a provider that does not answer (read_s), per attempt.
READ_TIMEOUT_S = 1.0
BREAKER_COOLDOWN_S = 1.0
GUARDRAIL_BUDGET_MS = 500
# A prompt part that makes team-a's guardrail misbehave while a GuardrailFault is set.
MARKER = "guardrail-fault-marker"

def unique_tag() -> str:
    """16 random letters. Not digits: a run of digits can look like a phone number to the PII
    guardrail, and masked prompts that differ only there are the same request to the cache."""
    return "".join(chr(ord("a") + int(c, 16)) for c in uuid.uuid4().hex[:16])


def unique_prompt(topic: str) -> str:
    """A prompt no earlier request had (team-a's models cache exactly, so never a hit)."""
    return f"Request {unique_tag()}: {topic}"


# -- what a client saw ---------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    tenant: str
    model: str
    stream: bool
    status: int | None            # None: no HTTP answer at all
    seconds: float
    # complete: a whole answer (non-stream: a finish/stop reason; stream: its last event)
    # error-status: an error status before any byte of an answer
    # error-event: a stream that began (200) and ended with an error event the SDK raised
    # truncated: a 200 that ended without its last event and without an error (a lie)
    # no-answer: the connection failed or the client timed out
    ended: str
    deployment: str | None = None
    cache: str | None = None
    guardrails: str | None = None
    error: str = ""
    code: str = ""                # error-status: the body's OpenAI `code` / Anthropic `error.type`
    retry_after: str | None = None
    wire: str = "openai"
    message: str = ""             # error-status: the body's error message

    @property
    def served(self) -> bool:
        return self.status is not None


def _headers(raw) -> tuple[str | None, str | None, str | None]:
    h = raw.headers
    return h.get("x-sluice-deployment"), h.get("x-sluice-cache"), h.get("x-sluice-guardrails")


def _error_status(exc, tenant: str, model: str, stream: bool, started: float, wire: str) -> Outcome:
    """An error answer, read from the wire: the body must be in the caller's format."""
    response = exc.response
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or (wire == "anthropic" and body.get("type") != "error"):
        error = {}
    code = error.get("code" if wire == "openai" else "type") or "?"
    return Outcome(tenant, model, stream, exc.status_code, time.perf_counter() - started, "error-status",
                   response.headers.get("x-sluice-deployment"), error=type(exc).__name__, code=str(code),
                   retry_after=response.headers.get("retry-after"), wire=wire,
                   message=str(error.get("message", ""))[:300])


def _openai_call(client: openai.OpenAI, tenant: str, model: str, prompt: str, stream: bool) -> Outcome:
    started = time.perf_counter()
    kwargs = {"model": model, "messages": [{"role": "user", "content": prompt}]}
    try:
        raw = client.chat.completions.with_raw_response.create(stream=stream, **kwargs)
    except openai.APIStatusError as exc:
        return _error_status(exc, tenant, model, stream, started, "openai")
    except openai.APIConnectionError as exc:
        return Outcome(tenant, model, stream, None, time.perf_counter() - started, "no-answer", error=repr(exc))
    deployment, cache, guardrails = _headers(raw)
    finish = None
    try:
        if stream:
            for chunk in raw.parse():
                for choice in chunk.choices:
                    finish = choice.finish_reason or finish
        else:
            finish = raw.parse().choices[0].finish_reason
    except openai.APIError as exc:
        return Outcome(tenant, model, stream, raw.status_code, time.perf_counter() - started, "error-event",
                       deployment, cache, guardrails, f"{type(exc).__name__}: {exc.message[:80]}")
    ended = "complete" if finish else "truncated"
    return Outcome(tenant, model, stream, raw.status_code, time.perf_counter() - started, ended, deployment,
                   cache, guardrails)


def _anthropic_call(client: anthropic.Anthropic, tenant: str, model: str, prompt: str, stream: bool) -> Outcome:
    started = time.perf_counter()
    kwargs = {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": prompt}]}
    try:
        raw = client.messages.with_raw_response.create(stream=stream, **kwargs)
    except anthropic.APIStatusError as exc:
        return _error_status(exc, tenant, model, stream, started, "anthropic")
    except anthropic.APIConnectionError as exc:
        return Outcome(tenant, model, stream, None, time.perf_counter() - started, "no-answer", error=repr(exc), wire="anthropic")
    deployment, cache, guardrails = _headers(raw)
    stopped = False
    try:
        if stream:
            for event in raw.parse():
                stopped = stopped or event.type == "message_stop"
        else:
            stopped = raw.parse().stop_reason is not None
    except anthropic.APIError as exc:
        return Outcome(tenant, model, stream, raw.status_code, time.perf_counter() - started, "error-event",
                       deployment, cache, guardrails, f"{type(exc).__name__}: {str(exc)[:80]}", wire="anthropic")
    return Outcome(tenant, model, stream, raw.status_code, time.perf_counter() - started,
                   "complete" if stopped else "truncated", deployment, cache, guardrails, wire="anthropic")


# -- the gateway, its clients and its ledger -------------------------------------------------


class FaultGateway:
    """The running gateway, an SDK client per (tenant, wire format), and `served`."""

    def __init__(self, running: RunningGateway, redis: RedisServer | None = None) -> None:
        self.running = running
        self.url = running.url
        self.redis = redis
        self._lock = threading.Lock()
        self.served = 0
        self._openai = {t: openai.OpenAI(base_url=f"{self.url}/v1", api_key=k, max_retries=0, timeout=20)
                        for t, k in KEYS.items()}
        self._anthropic = {t: anthropic.Anthropic(base_url=self.url, api_key=k, max_retries=0, timeout=20)
                           for t, k in KEYS.items()}

    @property
    def gateway(self):
        return self.running.gateway

    def call(self, tenant: str, model: str, prompt: str, *, stream: bool = False, wire: str = "openai") -> Outcome:
        """One request through the tenant's SDK client; counted as served if answered."""
        if wire == "openai":
            outcome = _openai_call(self._openai[tenant], tenant, model, prompt, stream)
        else:
            outcome = _anthropic_call(self._anthropic[tenant], tenant, model, prompt, stream)
        if outcome.served:
            with self._lock:
                self.served += 1
        return outcome

    def concurrently(self, calls: list[Callable[[], Outcome]], threads: int = 4) -> list[Outcome]:
        """Run `calls` from `threads` concurrent clients; outcomes in the order given."""
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(lambda call: call(), calls))

    # -- accounting ----------------------------------------------------------------------

    def metric(self, name: str, **labels: str | Callable[[str], bool]) -> float:
        """The sum of `name`'s samples in /metrics whose labels match (a value, or a test)."""
        def matches(have: str | None, want: str | Callable[[str], bool]) -> bool:
            return have is not None and (want(have) if callable(want) else have == want)

        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
                   if s.name == name and all(matches(s.labels.get(k), v) for k, v in labels.items()))

    def dropped(self) -> float:
        return self.metric("sluice_telemetry_rows_dropped_total", queue="requests")

    def rows(self, flush_s: float = 3.0) -> int | None:
        """Request rows in ClickHouse, through the gateway's telemetry (the collector's report,
        once everything recorded so far is flushed); None while that is not possible."""
        telemetry = self.gateway.telemetry
        try:
            if not telemetry.flush(flush_s):
                return None
            return report_total(telemetry.report("1d", "tenant"))
        except Exception:           # the collector or ClickHouse cannot answer (yet)
            return None

    def accounted(self, timeout_s: float = 30.0) -> str:
        """Wait until rows + dropped == served (the collector's counters reach /metrics once
        a second); returns the figures for the table, or fails with them."""
        deadline = time.monotonic() + timeout_s
        while True:
            served = self.served
            rows, dropped = self.rows(), self.dropped()
            if rows is not None and rows + dropped == served:
                return f"rows {rows} + dropped {dropped:g} == served {served}"
            if time.monotonic() > deadline:
                pytest.fail(f"accounting: rows {rows} + dropped {dropped:g} != served {served}")
            time.sleep(0.3)


def report_total(report: str) -> int:
    """The requests column of the report's TOTAL line (0 for "(no requests)")."""
    for line in report.splitlines():
        cells = line.split()
        if cells[:1] == ["TOTAL"]:
            return int(cells[1])
    return 0


# -- the other tenants' traffic -------------------------------------------------------------


TOPICS = ("What is the boiling point of water at sea level?", "Name three primary colours.",
          "How many days are there in a leap year?", "Translate 'good morning' into French.",
          "What is the capital of Japan?", "Explain what a hash map is in one sentence.")


class Background:
    """team-b and team-c clients sending requests in a loop (non-stream and stream in turn,
    a short pause between) until `stop()`; every outcome is kept."""

    def __init__(self, fg: FaultGateway, clients_per_tenant: int = 2, pause_s: float = 0.03) -> None:
        self._fg = fg
        self._clients = clients_per_tenant
        self._pause = pause_s
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.outcomes: list[Outcome] = []

    def _run(self, tenant: str, offset: int) -> None:
        model, wire = OTHERS[tenant]
        for i in itertools.count(offset):
            if self._stop.is_set():
                return
            # Some prompts repeat (cache hits), most do not (the provider answers).
            prompt = TOPICS[i % len(TOPICS)] if i % 4 == 0 else unique_prompt(TOPICS[i % len(TOPICS)])
            self.outcomes.append(self._fg.call(tenant, model, prompt, stream=i % 2 == 1, wire=wire))
            self._stop.wait(self._pause)

    def __enter__(self) -> "Background":
        for tenant in OTHERS:
            for n in range(self._clients):
                thread = threading.Thread(target=self._run, args=(tenant, n), daemon=True)
                thread.start()
                self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


def p95(outcomes: list[Outcome]) -> float:
    seconds = sorted(o.seconds for o in outcomes)
    return seconds[max(0, round(0.95 * len(seconds)) - 1)] if seconds else float("nan")


@dataclass
class Baseline:
    """The other tenants' latency with no fault, measured once at the start."""

    p95_s: float
    median_s: float

    def bound_s(self) -> float:
        # "Normal latency" on two shared cores, whatever else runs on them: within a few
        # times the fault-free p95, or a second more. A fault reaching another tenant costs
        # it far more: an upstream read timeout is READ_TIMEOUT_S per attempt, two attempts.
        return max(4 * self.p95_s, self.p95_s + 1.0)


def check_others(outcomes: list[Outcome], baseline: Baseline) -> str:
    """The other tenants kept succeeding with normal latency; returns the table cell."""
    assert outcomes, "no background traffic ran"
    bad = [o for o in outcomes if o.status != 200 or o.ended != "complete"]
    assert not bad, f"{len(bad)} of {len(outcomes)} requests of other tenants failed: {bad[:3]}"
    observed = p95(outcomes)
    assert observed <= baseline.bound_s(), (
        f"other tenants' p95 {observed * 1000:.0f} ms during the fault, fault-free p95 "
        f"{baseline.p95_s * 1000:.0f} ms (bound {baseline.bound_s() * 1000:.0f} ms)")
    return f"{len(outcomes)}/{len(outcomes)} ok, p95 {observed * 1000:.0f} ms (fault-free {baseline.p95_s * 1000:.0f})"


def summary(outcomes: list[Outcome]) -> str:
    """Outcome counts for the table, e.g. "200 complete via backup/claude-a x8"."""
    counts: dict[str, int] = {}
    for o in outcomes:
        key = f"{o.status} {o.ended}"
        if o.status == 200 and o.deployment:
            key += f" via {o.deployment}"
        elif o.code:
            key += f" {o.code}"
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{k} x{n}" for k, n in sorted(counts.items()))


def wait_until(predicate: Callable[[], object], timeout_s: float, every_s: float = 0.1) -> object:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every_s)


# -- the fault table ----------------------------------------------------------------------


@dataclass
class FaultRow:
    fault: str
    client: str
    others: str = ""
    accounting: str = ""
    recovered: str = ""


FAULT_TABLE: list[FaultRow] = []


@pytest.fixture
def fault_row(request: pytest.FixtureRequest) -> Iterator[FaultRow]:
    """The test's row of the table; a failed test's row says so."""
    row = FaultRow(fault=request.node.name, client="")
    yield row
    FAULT_TABLE.append(row)


def render_table(rows: list[FaultRow]) -> str:
    lines = ["| fault | what the client saw | other tenants | rows + dropped == served | recovered without restart |",
             "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r.fault} | {r.client} | {r.others} | {r.accounting} | {r.recovered} |" for r in rows]
    return "\n".join(lines)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if FAULT_TABLE:
        terminalreporter.write_sep("-", "fault table (tests/faults)")
        terminalreporter.write_line(render_table(FAULT_TABLE))


# -- fixtures ------------------------------------------------------------------------------


class GuardrailFault:
    """team-a's guardrail misbehaving on demand: Presidio's analyzer, wrapped, hangs for
    `hang_s` or raises while `mode` says so, on texts carrying MARKER (only team-a's
    requests in the guardrail test send it); `mode = None` is the fault removed."""

    def __init__(self, analyzer, hang_s: float = 3.0) -> None:
        self._analyzer = analyzer
        self.hang_s = hang_s
        self.mode: str | None = None          # None | "hang" | "raise"
        self.hit = 0

    def analyze(self, text: str, *args, **kwargs):
        if self.mode is not None and MARKER in text:
            self.hit += 1
            if self.mode == "hang":
                time.sleep(self.hang_s)
            else:
                raise RuntimeError("injected guardrail failure")
        return self._analyzer.analyze(text, *args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._analyzer, name)


def model(provider: str, upstream: str, *fallback: tuple[str, str]) -> dict:
    deployments = [{"provider": provider, "model": upstream}]
    deployments += [{"provider": p, "model": m} for p, m in fallback]
    return {"strategy": "fallback", "deployments": deployments}


def fault_config(primary: Mock, backup: Mock, redis_url: str, data_dir: Path) -> dict:
    fast = {"connect_s": 1, "read_s": READ_TIMEOUT_S, "total_s": 3}
    pii = {"input_action": "mask", "output_action": "redact", "budget_ms": GUARDRAIL_BUDGET_MS}
    # The other tenants' budget is roomier: a loaded test machine must not fail their scans,
    # while a hang of team-a's reaching them (3 s) still would.
    others_pii = {**pii, "budget_ms": 2000}
    return {
        "data_dir": str(data_dir),
        # normal priority: an idle-priority collector may not get CPU on a busy 2-core box in time
        "telemetry": {"collector_priority": "normal", "flush_interval_s": 0.2},
        "cache": {"enabled": True, "redis_url": redis_url, "redis_retry_after_s": 0.2,
                  "index_name": "faults-idx", "key_prefix": "faults:",
                  # team-a's fault requests must reach the provider: exact, unique prompts
                  "models": {m: {"mode": "exact"} for m in (A_FALLBACK, A_SOLO, A_OPEN)}},
        "guardrails": {
            "toxicity_model": None,
            # team-a has no tenant policy: its models' policies apply (closed, and one open)
            "tenants": {"team-b": {"pii": others_pii, "injection": {"action": "flag", "budget_ms": 2000},
                                   "fail": "closed"},
                        "team-c": {"pii": others_pii, "fail": "closed"}},
            "models": {A_FALLBACK: {"pii": pii, "fail": "closed"}, A_SOLO: {"pii": pii, "fail": "closed"},
                       A_OPEN: {"pii": pii, "fail": "open"}},
        },
        "keys": [{"key": KEYS["team-a"], "tenant": "team-a", "models": [A_FALLBACK, A_SOLO, A_OPEN]},
                 {"key": KEYS["team-b"], "tenant": "team-b", "models": ["b-chat"]},
                 {"key": KEYS["team-c"], "tenant": "team-c", "models": ["c-chat"]}],
        "providers": {
            "primary": {"type": "openai", "base_url": f"{primary.url}/v1", "api_key": PRIMARY_KEY, "timeouts": fast},
            "backup": {"type": "anthropic", "base_url": backup.url, "api_key": BACKUP_KEY, "timeouts": fast},
        },
        "models": {
            A_FALLBACK: model("primary", "ma", ("backup", "claude-a")),
            A_SOLO: model("primary", "ma-solo"),
            A_OPEN: model("primary", "ma-open"),
            "b-chat": model("primary", "mb"),
            "c-chat": model("backup", "claude-c"),
        },
        "router": {"retries": 1, "backoff_base_s": 0.01, "max_retry_after_s": 2,
                   "breaker": {"failure_threshold": 3, "cooldown_s": BREAKER_COOLDOWN_S}},
    }


@pytest.fixture(scope="package")
def fault_redis() -> Iterator[RedisServer]:
    """A Redis of the suite's own: the Redis test kills and restarts it."""
    server = start_redis(with_search=True)
    yield server
    server.stop()


@dataclass
class Suite:
    fg: FaultGateway
    baseline: Baseline
    guardrail: GuardrailFault
    mocks: dict[str, Mock] = field(default_factory=dict)


@pytest.fixture(scope="package")
def suite(primary: Mock, backup: Mock, fault_redis: RedisServer, model_cache_dir: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    from cache.onnx_export import default_model_dir, ensure_onnx

    # The one-time ONNX export first (the gateway's start-up then only loads it), shared with
    # the rest of the session through model_cache_dir.
    ensure_onnx(default_model_dir(), model_cache_dir, quantize=True)
    data_dir = tmp_path_factory.mktemp("faults") / "data"
    data_dir.mkdir()
    (data_dir / "models").symlink_to(model_cache_dir)
    running = start_gateway(fault_config(primary, backup, fault_redis.url, data_dir))
    try:
        fg = FaultGateway(running, fault_redis)
        detector = fg.gateway.guardrails._detectors.pii
        guardrail = GuardrailFault(detector._analyzer)
        detector._analyzer = guardrail
        with Background(fg) as bg:
            time.sleep(2.0)
        fault_free = bg.outcomes
        assert fault_free and all(o.status == 200 and o.ended == "complete" for o in fault_free), fault_free[:3]
        baseline = Baseline(p95(fault_free), statistics.median(o.seconds for o in fault_free))
        yield Suite(fg, baseline, guardrail, {"primary": primary, "backup": backup})
    finally:
        running.stop()


@pytest.fixture
def guardrail_fault(suite: Suite) -> Iterator[GuardrailFault]:
    """team-a's guardrail fault, removed after the test whatever happened."""
    yield suite.guardrail
    suite.guardrail.mode = None


@pytest.fixture
def clean_faults(primary: Mock, backup: Mock) -> Iterator[None]:
    """Faults set by a test never outlive it (the mocks are the session's)."""
    yield
    primary.clear()
    backup.clear()
