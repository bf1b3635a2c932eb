"""The suite's scenarios, as data: one scenario is one run and one table.

A new Sluice variant is one more name here (`sluice:<name>` reads
`bench/configs/<name>.yaml`); a new scenario is one more `Scenario`.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.run import BenchSettings
from bench.targets import MockSettings

PEERS = ("litellm", "portkey")


@dataclass(frozen=True)
class Scenario:
    key: str  # what --scenarios selects
    title: str
    targets: tuple[str, ...]
    stream: bool = False
    latency_ms: float = 0.0
    tokens_per_second: float = 0.0
    output_tokens: int = 16
    same_prompt: bool = False  # every target gets one identical prompt
    same_prompt_targets: tuple[str, ...] = ()  # only these do (a cache hit next to provider calls)
    rounds: int = 1  # >1: the targets run in turn that many times, each keeps its median round
    cpus: tuple[int, ...] = ()  # pin the whole scenario (mock, targets, Redis, load generator) to these CPUs

    def settings(self, duration: float, warmup: float, connections: int, generator: str) -> BenchSettings:
        return BenchSettings(
            targets=self.targets, duration=duration, warmup=warmup, connections=connections, stream=self.stream,
            unique_prompts=not self.same_prompt, same_prompt_targets=frozenset(self.same_prompt_targets),
            generator=generator, rounds=self.rounds, cpus=self.cpus,
            mock=MockSettings(self.latency_ms, self.tokens_per_second, self.output_tokens),
        )


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("a", "Non-streaming chat, 0 ms provider",
             ("direct", "sluice:bare", "sluice:aiohttp", "sluice:traced", "sluice:rows-only", "sluice:cache-semantic",
              "sluice:guardrails", *PEERS)),
    Scenario("b", "Exact cache hits (one identical prompt), 0 ms provider",
             ("direct", "sluice:cache-exact"), same_prompt=True),
    Scenario("c", "Streaming chat, 0 ms provider",
             ("direct", "sluice:bare", "sluice:traced", *PEERS), stream=True),
    Scenario("d", "Non-streaming chat, 200 ms provider (cache-exact: hits of one identical prompt)",
             ("direct", "sluice:bare", "sluice:traced", "sluice:cache-exact", *PEERS),
             latency_ms=200, same_prompt_targets=("sluice:cache-exact",)),
    Scenario("e", "Streaming chat, 200 ms provider, 32 tokens paced at 50 tokens/s",
             ("direct", "sluice:bare", "sluice:traced", "litellm"), stream=True,
             latency_ms=200, tokens_per_second=50, output_tokens=32),
    Scenario("f", "Worker processes (`--workers 2`), non-streaming chat, 0 ms provider",
             ("direct", "sluice:bare", "sluice:bare-2w", "sluice:traced", "sluice:traced-2w")),
    # What tracing costs, measured so that the machine's drift cannot decide it: the
    # configurations take turns for 5 rounds and the ratios are between median rounds.
    Scenario("g", "Tracing cost: bare, traced, traced at 10% sampling and request rows only, in turn for "
             "5 rounds, non-streaming, 0 ms provider",
             ("sluice:bare", "sluice:traced", "sluice:traced-sampled", "sluice:rows-only"), rounds=5),
    # What rate limits and a budget on the key cost (one Redis script call per request),
    # against the same gateway without them, with and without the key, in turn for 5 rounds.
    # h runs everything on one CPU, so the table charges the limits with what the gateway and
    # Redis compute, Redis' CPU included; i lets the processes spread over both CPUs, where
    # a reserve call to Redis on the other vCPU costs the gateway ~3x more on this VM (bench/README.md).
    Scenario("h", "Limits cost, one CPU for the whole run: a key with rpm, tpm, max_parallel and a budget in "
             "Redis against the same key without limits and bare Sluice, in turn for 5 rounds, non-streaming, "
             "0 ms provider", ("sluice:bare", "sluice:keys", "sluice:limits"), rounds=5, cpus=(0,)),
    Scenario("i", "Limits cost as in h, the processes spread over every CPU (Redis calls across vCPUs "
             "included)", ("sluice:bare", "sluice:keys", "sluice:limits"), rounds=5),
)


def select(keys: str | None, scenarios: tuple[Scenario, ...] = SCENARIOS) -> list[Scenario]:
    """`"a,c"` -> those scenarios in table order; None or "" -> all. Unknown keys raise."""
    if not keys:
        return list(scenarios)
    wanted = [key.strip() for key in keys.split(",") if key.strip()]
    known = {scenario.key for scenario in scenarios}
    unknown = [key for key in wanted if key not in known]
    if unknown:
        raise ValueError(f"unknown scenario(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return [scenario for scenario in scenarios if scenario.key in wanted]
