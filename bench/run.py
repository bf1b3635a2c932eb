"""One benchmark run: start the mock (and Sluice), drive each target in turn, report.

Targets run one after the other against the same mock process, with the same load
generator, request body and connection count; each gets a warm-up first. Streams get a
TTFT probe alongside the load (bench/probe.py). With `rounds` > 1 the targets run in turn
that many times (bare, traced, bare, traced, ...) and each keeps its median round: a
ratio between two targets then survives this machine's drift of several percent from one
minute to the next, which a single 10 s measurement each does not.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import httpx
import orjson

from bench.loadgen import UNIQUE_MARKER, LoadSpec, run_load, wrk_available
from bench.peers import start_litellm, start_portkey
from bench.probe import TtftProbe
from bench.processes import ManagedProcess
from bench.report import Row, as_dict, markdown_table
from bench.targets import (
    CONFIGS_DIR,
    DEFAULT_SLUICE_CONFIG,
    MockSettings,
    Target,
    direct_target,
    start_mock,
    start_sluice,
)

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PROMPT = ("Request " + UNIQUE_MARKER + ": summarise the main trade-offs between latency, throughput and cost "
          "when serving a large language model behind a gateway, in three short bullet points.")


@dataclass(frozen=True)
class BenchSettings:
    targets: tuple[str, ...] = ("direct", "sluice")
    duration: float = 10.0
    warmup: float = 2.0
    connections: int = 16
    stream: bool = False
    unique_prompts: bool = True  # defeat any cache in front of the provider
    # targets sent one identical prompt even when the others get unique ones (a cache hit
    # measured next to calls that reach the provider)
    same_prompt_targets: frozenset[str] = frozenset()
    generator: str = "auto"  # auto | wrk | python
    rounds: int = 1  # every target measured this many times, in turn; the median round is kept
    mock: MockSettings = MockSettings()
    sluice_config: Path = DEFAULT_SLUICE_CONFIG
    gateway_key: str | None = None
    cpus: tuple[int, ...] = ()  # pin the whole run (mock, targets, Redis, load generator) to these CPUs

    def unique_for(self, name: str) -> bool:
        return self.unique_prompts and name not in self.same_prompt_targets


def request_body(model: str, stream: bool, unique: bool) -> bytes:
    prompt = PROMPT if unique else PROMPT.replace(UNIQUE_MARKER, "0")
    body: dict[str, object] = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 256}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return orjson.dumps(body)


def resolve_generator(generator: str) -> str:
    if generator == "auto":
        return "wrk" if wrk_available() else "python"
    return generator


def run_benchmark(settings: BenchSettings, run_dir: Path | None = None) -> tuple[list[Row], Path]:
    """Run every requested target; returns the rows and the run directory (logs, JSON).

    Each target is started, measured and stopped before the next one starts: an idle
    peer must not hold memory or wake-ups while another target is measured.
    """
    generator = resolve_generator(settings.generator)
    run_dir = run_dir or RESULTS_DIR / time.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    by_target: list[list[Row]] = [[] for _ in settings.targets]     # a name may repeat
    with pinned(settings.cpus):
        mock, mock_port = start_mock(settings.mock, run_dir)
        try:
            for _ in range(settings.rounds):
                for measured, name in zip(by_target, settings.targets):
                    measured.append(_run_target(name, mock, mock_port, run_dir, generator, settings))
        finally:
            mock.stop()
    rows = [median_round(measured) for measured in by_target]
    record = asdict(settings) | {"generator": generator, "same_prompt_targets": sorted(settings.same_prompt_targets)}
    (run_dir / "results.json").write_bytes(orjson.dumps(
        {"settings": record, "rows": [as_dict(r) for r in rows]}, option=orjson.OPT_INDENT_2, default=str))
    return rows, run_dir


@contextlib.contextmanager
def pinned(cpus: tuple[int, ...]) -> Iterator[None]:
    """This process, and every process it starts meanwhile (they inherit it), on `cpus`
    only; () leaves the affinity alone. Why a run may want one CPU: bench/README.md."""
    if not cpus:
        yield
        return
    allowed = os.sched_getaffinity(0)
    if not set(cpus) <= allowed:
        raise ValueError(f"CPUs {sorted(set(cpus) - allowed)} are not available here (allowed: {sorted(allowed)})")
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, allowed)


def median_round(rounds: list[Row]) -> Row:
    """One target's row over its rounds: the round with the median req/s (the lower middle
    of an even count), so its latency and CPU figures come from that same round, and every
    round's req/s beside it. A target that failed in any round is reported as failed."""
    if len(rounds) == 1:
        return rounds[0]
    failed = next((row for row in rounds if row.result is None), None)
    if failed is not None:
        return failed
    rates = [row.result.requests_per_second for row in rounds]
    middle = statistics.median_low(rates)
    chosen = rounds[rates.index(middle)]
    return replace(chosen, rounds=tuple(rates))


def _run_target(name: str, mock: ManagedProcess, mock_port: int, run_dir: Path, generator: str,
                settings: BenchSettings) -> Row:
    """One row: start the target, measure it, stop it. Failures become "not run" rows."""
    label = name if settings.unique_for(name) or not settings.unique_prompts else f"{name} (same prompt)"
    try:
        target = _start_target(name, mock_port, run_dir, settings)
    except Exception as error:  # a target that cannot start is reported, not fatal
        return Row(label, None, note=str(error).splitlines()[0])
    if label != name:
        target.name = f"{target.name} (same prompt)"
    try:
        return _measure(target, mock, generator, settings, settings.unique_for(name))
    except Exception as error:  # e.g. the gateway died under load: keep the other rows
        log = target.process.log_path if target.process else mock.log_path
        return Row(target.name, None, note=f"{str(error).splitlines()[0]} (see {log})")
    finally:
        if target.process is not None:
            target.process.stop()
        for companion in target.companions:         # e.g. the Redis of sluice:limits
            companion.stop()


def _start_target(name: str, mock_port: int, run_dir: Path, settings: BenchSettings) -> Target:
    if name == "direct":
        return direct_target(mock_port)
    if name == "sluice":
        return start_sluice(mock_port, run_dir, settings.sluice_config, settings.gateway_key)
    if name.startswith("sluice:"):            # a named variant: bench/configs/<variant>.yaml
        config = CONFIGS_DIR / f"{name.partition(':')[2]}.yaml"
        if not config.exists():
            raise ValueError(f"no bench config {config}")
        return start_sluice(mock_port, run_dir, config, settings.gateway_key, name)
    if name == "litellm":                     # peers: installed into bench/.peers on first use
        return start_litellm(mock_port, run_dir)
    if name == "portkey":
        return start_portkey(mock_port, run_dir)
    raise ValueError(f"unknown target {name!r} (known: direct, sluice, sluice:<config in bench/configs>, "
                     "litellm, portkey)")


def _measure(target: Target, mock: ManagedProcess, generator: str, settings: BenchSettings,
             unique: bool) -> Row:
    body = request_body(target.model, settings.stream, unique)
    headers = {"Content-Type": "application/json", **target.headers}
    problem = _check(target, body, headers)
    if problem:
        return Row(target.name, None, note=problem)
    spec = LoadSpec(target.url, body, headers, settings.connections, settings.duration)
    if settings.warmup > 0:
        run_load(LoadSpec(target.url, body, headers, settings.connections, settings.warmup), generator)
    gateway_before = target.process.cpu_seconds() if target.process else 0.0
    mock_before = mock.cpu_seconds()
    probe = TtftProbe(target.url, body, headers, settings.duration) if settings.stream else None
    if probe is not None:
        probe.start()
    result = run_load(spec, generator)
    ttft = probe.join() if probe is not None else None
    mock_cpu = mock.cpu_seconds() - mock_before
    gateway_cpu = target.process.cpu_seconds() - gateway_before if target.process else None
    # the probe's requests cost CPU too: count them in the per-request figures
    served = result.requests + (ttft.samples + ttft.errors if ttft else 0)
    return Row(target.name, result,
               gateway_cpu_s_per_1k=_per_thousand(gateway_cpu, served),
               mock_cpu_s_per_1k=_per_thousand(mock_cpu, served),
               ttft=ttft,
               peak_rss_mb=target.process.peak_rss_mb() if target.process else None)


def _check(target: Target, body: bytes, headers: dict[str, str]) -> str:
    """One request first: a target that answers errors is reported, not benchmarked."""
    try:
        response = httpx.post(target.url, content=body.replace(UNIQUE_MARKER.encode(), b"check"),
                              headers=headers, timeout=30, trust_env=False)
    except httpx.HTTPError as error:
        return f"check request failed: {error!r}"
    if response.status_code != 200:
        return f"check request answered {response.status_code}: {response.text[:200]}"
    return ""


def _per_thousand(cpu_seconds: float | None, requests: int) -> float | None:
    if cpu_seconds is None or not requests:
        return None
    return cpu_seconds / requests * 1000


def describe(settings: BenchSettings) -> str:
    """One line saying what a table measured."""
    mode = "stream" if settings.stream else "non-stream"
    prompts = "unique prompts" if settings.unique_prompts else "one identical prompt"
    pacing = f", paced at {settings.mock.tokens_per_second:g} tokens/s" if settings.mock.tokens_per_second else ""
    rounds = f", {settings.rounds} rounds in turn (median round kept)" if settings.rounds > 1 else ""
    cpus = f", everything on CPU {','.join(map(str, settings.cpus))}" if settings.cpus else ""
    return (f"chat completions, {mode}, {prompts}, {settings.connections} connections, {settings.duration:g} s "
            f"(+{settings.warmup:g} s warm-up) per target{rounds}, mock latency {settings.mock.latency_ms:g} ms, "
            f"{settings.mock.output_tokens} output tokens{pacing}, {resolve_generator(settings.generator)}{cpus}")


def print_report(rows: list[Row], run_dir: Path, settings: BenchSettings) -> None:
    print(f"\n{describe(settings)}\n")
    print(markdown_table(rows, settings.stream))
    print(f"\nlogs and results.json in {run_dir}")
