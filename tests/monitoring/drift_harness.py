"""Synthetic drift through a real gateway: scenarios, traffic in rounds, runs placed on rounds.

One gateway (telemetry on the session's chDB, writer "thread"; the semantic cache with the
real local embedder for the topic model, whose prompts then carry embeddings) in front of
a mock provider of its own, scripted per upstream model through POST /_mock/script. The
stable stream has no cache: the runner embeds samples of its prompt texts itself (the
other path to embedding drift), and its latency stays the provider's, not the queue of
the cache's one embedding thread on a shared 2-core machine.

Time is cut into *rounds*: in each round every active model gets `PER_ROUND` requests, sent
concurrently; a round ends when all of them are answered, so rounds never overlap. A run
placed on round r (r >= 2) has rounds r-1 and r as its current window (`now` = the end of
round r) and every round before that as its baseline: consecutive windows overlap by half,
as in production, where a run every 5 minutes looks at the last hour, and the baseline
ends where the window starts. From `SHIFT_ROUND` on, the scenario models answer
with their shifted script; the stable model keeps its own for `STABLE_ROUNDS` rounds. Every
answer is English text drawn from a few templates echoing the prompt (the mock's default
filler is Latin, which would make the language mix noisy), prompts are drawn from topic
templates, latencies are a provider's (80-230 ms), and the stable stream has a 5% refusal share: natural variation, so that "no alert" means something.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import httpx

from tests.gateway_server import RunningGateway, start_gateway

PER_ROUND = 32               # requests per model and round (min_samples 30 a side)
SHIFT_ROUND = 3              # rounds 0-2 baseline, 3-5 shifted
SCENARIO_ROUNDS = 6
STABLE_ROUNDS = 22           # runs on rounds 2-21: 20 windows
STABLE_PER_ROUND = 40        # the busiest segment: the runner's embedding budget goes to it first
CONCURRENCY = 48
WARMUP_PER_MODEL = 4
GATEWAY_KEY = "sluice-drift-test-secret"

ANSWERS = [
    "Here is a short answer about {prompt} that should help you get started today.",
    "Good question. In short, for {prompt} the usual approach works well in most cases.",
    "Thanks for asking about {prompt}. The main points are simple and easy to follow.",
    "About {prompt}: most people find that a careful first step makes the rest much easier.",
]
LONG_ANSWERS = [f"{a} {a.replace('{prompt}', 'this topic')}" for a in ANSWERS]   # twice as long
FRENCH = [
    "Voici une courte réponse à votre question, qui devrait vous aider à bien commencer aujourd'hui.",
    "Bonne question. En bref, la méthode habituelle fonctionne bien dans la plupart des cas.",
    "Merci pour votre question. Les points principaux sont simples et faciles à suivre.",
    "La plupart des gens trouvent qu'une première étape soignée rend la suite beaucoup plus facile.",
]
REFUSAL = "I'm sorry, but I can't help with that request."
COOKING = ["how long should I roast a {a} chicken at {n} degrees", "what spices go well with {a} lentil soup",
           "how do I keep {a} bread from going stale after {n} days", "can I freeze {a} tomato sauce for {n} weeks",
           "what is a good substitute for {a} butter in cookies", "how do I make {a} pancakes for {n} people"]
PROGRAMMING = ["how do I reverse a {a} linked list in Python in O({n}) time",
               "why does my {a} Rust borrow checker complain about lifetime {n}",
               "how do I write a {a} SQL join across {n} tables", "what is the difference between a {a} mutex "
               "and a semaphore with {n} threads", "how do I profile a {a} Go service using {n} cores",
               "how do I fix a {a} segmentation fault in C after {n} allocations"]
TRAVEL = ["what should I pack for a {a} trip of {n} days to Norway", "is it worth visiting {a} Lisbon for {n} days",
          "how do I find {a} cheap train tickets for {n} people in Italy"]
ADJECTIVES = ["small", "large", "quick", "simple", "classic", "spicy", "fresh", "tricky", "modern", "old"]


@dataclass
class Scenario:
    """One public model (upstream model `u-<name>`) and how it shifts."""

    name: str
    shift: str                        # what changes (for the detection table)
    metric: str                       # the metric meant to catch it ("" for events only)
    baseline: list[dict]              # script rules before SHIFT_ROUND (model filled in)
    shifted: list[dict] | None        # after (None: no provider-side change)
    topics: tuple[list[str], list[str]] = (COOKING, COOKING)      # prompts before / after
    system: tuple[str, str] | None = None                         # system prompt before / after
    json: bool = False
    cached: bool = False              # semantic cache on: prompt embeddings stored
    rounds: int = SCENARIO_ROUNDS
    per_round: int = PER_ROUND

    @property
    def public(self) -> str:
        return f"d-{self.name}"

    @property
    def upstream(self) -> str:
        return f"u-{self.name}"


# Provider-like latency, 80-230 ms: the queueing a loaded 2-core machine adds to a request
# stays small next to it (with 20 ms answers, a busy minute alone doubled a p95).
LATENCY = {"latency_ms": 80, "latency_jitter_ms": 150}


def _plain(**extra) -> dict:
    return {"texts": ANSWERS, **LATENCY, **extra}


SCENARIOS: list[Scenario] = [
    Scenario("topic", "topic shift in prompts (cooking -> programming)", "prompt_embedding_auc",
             [_plain()], None, topics=(COOKING, PROGRAMMING), cached=True),
    Scenario("length", "answers twice as long", "completion_tokens_psi", [_plain()],
             [{"texts": LONG_ANSWERS, **LATENCY}]),
    Scenario("swap", "silent upstream model change (model + fingerprint)", "",
             [_plain()], [_plain(response_model="u-swap-2025-06", system_fingerprint="fp_new")]),
    Scenario("refusal", "refusal spike (0% -> 40%)", "refusal_rate",
             [_plain()], [{"text": REFUSAL, "fraction": 0.4}, _plain()]),
    Scenario("latency", "latency regression (+2 s)", "latency_p95_ms",
             [_plain()], [_plain(latency_ms=2080)]),
    Scenario("language", "answers switch to French", "language_js",
             [_plain()], [{"texts": FRENCH, **LATENCY}]),
    Scenario("json", "JSON validity drop (100% -> ~50%)", "json_valid_rate",
             [LATENCY], [{"text": "Sure! Here is the JSON you asked for: {prompt}", "fraction": 0.5, **LATENCY},
                         LATENCY], json=True),
    Scenario("prompt", "the team's own system prompt change", "",
             [_plain()], None, system=("You are a helpful cooking assistant.",
                                       "You are a concise cooking assistant. Answer in one line.")),
    Scenario("stable", "none (stable stream, natural variation)", "",
             [{"text": REFUSAL, "fraction": 0.05, **LATENCY}, _plain()], None, topics=(COOKING + TRAVEL, COOKING + TRAVEL),
             rounds=STABLE_ROUNDS, per_round=STABLE_PER_ROUND),
]


def gateway_config(mock_url: str, chdb_url: str, database: str, data_dir: str) -> dict:
    models = {s.public: {"deployments": [{"provider": "mock", "model": s.upstream, "name": f"mock/{s.upstream}"}]}
              for s in SCENARIOS}
    cached = {s.public: {"enabled": True} for s in SCENARIOS if s.cached}
    return {
        "data_dir": data_dir,
        "telemetry": {"clickhouse_url": chdb_url, "database": database, "flush_interval_s": 0.2,
                      "batch_size": 2000, "writer": "thread"},   # the test process holds the session's chDB
        # Semantic cache only to store prompt embeddings: every prompt is unique and the
        # threshold is 1.0, so nothing is answered from the cache.
        "cache": {"enabled": True, "default": {"enabled": False, "threshold": 1.0}, "models": cached},
        "keys": [{"key": GATEWAY_KEY, "tenant": "team-d"}],
        "providers": {"mock": {"type": "openai", "base_url": f"{mock_url}/v1",
                               "timeouts": {"connect_s": 2, "read_s": 10, "total_s": 10}}},
        "models": models,
        "router": {"retries": 0},
    }


def set_script(mock_url: str, round_index: int) -> None:
    rules = []
    for s in SCENARIOS:
        chosen = s.shifted if (round_index >= SHIFT_ROUND and s.shifted is not None) else s.baseline
        rules += [{**rule, "model": s.upstream} for rule in chosen]
    httpx.post(f"{mock_url}/_mock/script", json=rules).raise_for_status()


@dataclass
class Round:
    index: int
    start: datetime
    end: datetime
    sent: int


@dataclass
class Traffic:
    rounds: list[Round] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    warmup: int = 0                   # requests before round 0 (outside every window)
    probe: StallProbe | None = None

    @property
    def sent(self) -> int:
        return sum(r.sent for r in self.rounds)


def _request(s: Scenario, round_index: int, rng: random.Random) -> dict:
    after = round_index >= SHIFT_ROUND
    template = rng.choice(s.topics[1] if after else s.topics[0])
    # A random tag keeps prompts unique (no cache hits) without drifting over time, as a
    # growing serial number would: the classifier would learn the number of digits.
    tag = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(6))
    prompt = f"{template.format(a=rng.choice(ADJECTIVES), n=rng.randint(2, 400))}? (ref {tag})"
    messages = [{"role": "user", "content": prompt}]
    if s.system is not None:
        messages.insert(0, {"role": "system", "content": s.system[1] if after else s.system[0]})
    body: dict = {"model": s.public, "messages": messages}
    if s.json:
        body["response_format"] = {"type": "json_object"}
    if rng.random() < 0.25:
        body["stream"] = True
    return body


class StallProbe:
    """A thread that sleeps 20 ms at a time and notes how late it wakes: the test machine's
    own stalls (a 2-core box shared with other test runs; the GIL of this process, which
    also runs the gateway). A round whose requests waited on a stall of seconds has slow
    answers that no provider caused; the stable-stream test reports those windows."""

    def __init__(self) -> None:
        self.lateness: list[tuple[float, float]] = []       # (wall time, seconds late)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stall-probe", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.perf_counter()
            time.sleep(0.02)
            self.lateness.append((time.time(), time.perf_counter() - t0 - 0.02))

    def __enter__(self) -> StallProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def worst(self, start: datetime, end: datetime) -> float:
        a, b = start.timestamp(), end.timestamp()
        return max((late for t, late in self.lateness if a <= t <= b), default=0.0)

    def mean(self, start: datetime, end: datetime) -> float:
        a, b = start.timestamp(), end.timestamp()
        values = [late for t, late in self.lateness if a <= t <= b]
        return sum(values) / len(values) if values else 0.0


async def _send_all(client: httpx.AsyncClient, bodies: list[dict], failures: list[str]) -> None:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def send(body: dict) -> None:
        async with gate:
            try:
                resp = await client.post("/v1/chat/completions", json=body)
            except httpx.HTTPError as exc:
                failures.append(f"{body['model']}: {type(exc).__name__}")
                return
            if resp.status_code != 200:
                failures.append(f"{body['model']}: {resp.status_code} {resp.text[:200]}")

    await asyncio.gather(*(send(b) for b in bodies))


def send_rounds(gw: RunningGateway, mock_url: str, seed: int = 7) -> Traffic:
    """Every round, in order; returns their time ranges. One asyncio client (not a thread
    per connection: this process also runs the gateway, and client threads would take its GIL)."""
    traffic = Traffic()
    rng = random.Random(seed)
    headers = {"authorization": f"Bearer {GATEWAY_KEY}"}

    async def main() -> None:
        # keepalive_expiry under uvicorn's 5 s keep-alive: on a loaded machine a connection
        # idle between rounds could otherwise be reused just as the server closes it.
        async with httpx.AsyncClient(base_url=gw.url, headers=headers, timeout=120,
                                     limits=httpx.Limits(max_connections=CONCURRENCY,
                                                         keepalive_expiry=2.0)) as client:
            # Warm-up, before round 0 and so outside every window: a cold gateway's first
            # requests (connections, lazy imports) are seconds slower and would make round
            # 0's latencies a baseline nothing else matches.
            set_script(mock_url, 0)
            warmup = [_request(s, 0, rng) for s in SCENARIOS for _ in range(WARMUP_PER_MODEL)]
            await _send_all(client, warmup, traffic.failures)
            traffic.warmup = len(warmup)
            for index in range(max(s.rounds for s in SCENARIOS)):
                set_script(mock_url, index)
                bodies = [_request(s, index, rng) for s in SCENARIOS if index < s.rounds
                          for _ in range(s.per_round)]
                rng.shuffle(bodies)
                start = datetime.now(timezone.utc)
                await _send_all(client, bodies, traffic.failures)
                traffic.rounds.append(Round(index, start, datetime.now(timezone.utc), len(bodies)))
                await asyncio.sleep(0.01)

    with StallProbe() as probe:
        asyncio.run(main())
    traffic.probe = probe
    return traffic


FIRST_RUN_ROUND = 2


def run_window(rounds: list[Round], index: int) -> tuple[datetime, float, float]:
    """(now, window_s, baseline_s) of the run placed on round `index` (>= FIRST_RUN_ROUND)."""
    now = rounds[index].end + timedelta(milliseconds=5)
    window_start = rounds[index - 1].start
    return now, (now - window_start).total_seconds(), (window_start - rounds[0].start).total_seconds()


class MemoEmbedder:
    """The cache's LocalEmbedder for the runner, remembering texts it embedded: consecutive
    runs sample mostly the same baseline prompts, and the test has 20 of them to run."""

    def __init__(self, inner) -> None:
        self._inner = inner
        self._seen: dict[str, object] = {}

    def embed_sync(self, texts: list[str]) -> list:
        missing = [t for t in dict.fromkeys(texts) if t not in self._seen]
        if missing:
            self._seen.update(zip(missing, self._inner.embed_sync(missing)))
        return [self._seen[t] for t in texts]


def start(mock_url: str, chdb_url: str, database: str, data_dir: str) -> RunningGateway:
    return start_gateway(gateway_config(mock_url, chdb_url, database, data_dir))
