"""`python -m bench soak`: hold mixed load on Sluice, every feature on, for a long while
(10 minutes by default), and watch its memory.

The gateway runs `bench/configs/soak.yaml` (tracing to the embedded ClickHouse through the
collector process, the semantic cache, PII and prompt-injection guardrails) in front of
the mock, like any bench target (`bench.targets`). Three loads run at once, in windows of
`--window-s`, each driven by the bench's load generator (`bench.loadgen`):

    non-stream   unique prompts (the provider answers; the cache stores)   --connections
    stream       unique prompts, streamed                                  --connections
    cache hits   one repeated prompt (answered from the cache)             one connection

Before the first window and after each one the resident memory (VmRSS) of the gateway
process and of its telemetry collector is read from /proc. The report: throughput, p99
(median and worst window), errors, RSS at start / middle / end, and RSS growth from minute
2 (or a fifth of a shorter run) to the end, which must stay under `--max-growth-pct`
(10%): DESIGN.md's "long soaks show flat RSS". It goes to docs/benchmarks.md between the
`soak:begin` / `soak:end` markers (appended at the end the first time), and with every
window's figures to bench/results/<timestamp>-soak/soak.json. The exit status is 1 when
the growth is over the bound.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from bench.docs_section import write_section
from bench.loadgen import LoadResult, LoadSpec, run_load
from bench.machine import collect_machine
from bench.processes import ManagedProcess, command_line
from bench.run import RESULTS_DIR, request_body, resolve_generator
from bench.targets import CONFIGS_DIR, REPO_ROOT, MockSettings, start_mock, start_sluice

DOCS_PATH = REPO_ROOT / "docs" / "benchmarks.md"
SOAK_CONFIG = CONFIGS_DIR / "soak.yaml"
MODEL_CACHE = RESULTS_DIR / "models"        # the embedder's ONNX export, kept between runs
BEGIN, END = "<!-- soak:begin -->", "<!-- soak:end -->"
KINDS = ("non-stream", "stream", "cache hits")
GROWTH_FROM_S = 120.0


@dataclass(frozen=True)
class SoakSettings:
    duration_s: float = 600.0
    window_s: float = 30.0
    warmup_s: float = 5.0
    connections: int = 4          # of the non-stream and of the stream load (cache hits: one)
    latency_ms: float = 50.0      # mock latency before headers
    generator: str = "auto"
    max_growth_pct: float = 10.0
    model_cache: Path = MODEL_CACHE


@dataclass(frozen=True)
class Sample:
    """The processes' memory at `at_s` seconds into the measured run."""

    at_s: float
    gateway_rss_mb: float
    collector_rss_mb: float
    load_1m: float = 0.0          # the machine's load average: other work skews the latencies


@dataclass(frozen=True)
class Window:
    ended_s: float
    results: dict[str, LoadResult]        # by kind
    sample: Sample

    @property
    def requests(self) -> int:
        return sum(r.requests for r in self.results.values())

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.results.values())


@dataclass
class SoakReport:
    settings: SoakSettings
    generator: str
    start: Sample
    windows: list[Window] = field(default_factory=list)
    counters: dict[str, float] = field(default_factory=dict)   # from /metrics at the end

    @property
    def seconds(self) -> float:
        return self.windows[-1].ended_s if self.windows else 0.0

    @property
    def requests(self) -> int:
        return sum(w.requests for w in self.windows)

    @property
    def errors(self) -> int:
        return sum(w.errors for w in self.windows)

    def p99_ms(self, kind: str) -> tuple[float, float]:
        """(median, worst) of the windows' p99 for one kind of load."""
        values = [w.results[kind].p99_ms for w in self.windows]
        return statistics.median(values), max(values)

    def samples(self) -> list[Sample]:
        return [self.start, *(w.sample for w in self.windows)]

    def middle(self) -> Sample:
        samples = self.samples()
        half = self.seconds / 2
        return min(samples, key=lambda s: abs(s.at_s - half))

    def growth_from(self) -> Sample:
        """The first sample at minute 2 or later (a fifth of the run, for runs under 10 minutes)."""
        at = min(GROWTH_FROM_S, self.seconds / 5)
        return next(s for s in self.samples() if s.at_s >= at)

    def growth_pct(self) -> dict[str, float]:
        base, end = self.growth_from(), self.samples()[-1]
        return {"gateway": _pct(base.gateway_rss_mb, end.gateway_rss_mb),
                "collector": _pct(base.collector_rss_mb, end.collector_rss_mb),
                "both": _pct(base.gateway_rss_mb + base.collector_rss_mb, end.gateway_rss_mb + end.collector_rss_mb)}

    def within_bound(self) -> bool:
        return all(g < self.settings.max_growth_pct for g in self.growth_pct().values())


def _pct(before: float, after: float) -> float:
    return (after - before) / before * 100 if before else float("nan")


# -- measuring ------------------------------------------------------------------------------


def memory(gateway: ManagedProcess, at_s: float) -> Sample:
    """VmRSS of the gateway process (workers included) and of its telemetry collector."""
    collector = gateway_rss = 0.0
    for pid, rss in gateway.rss_mb().items():
        if "telemetry.collector" in command_line(pid):
            collector += rss
        else:
            gateway_rss += rss
    return Sample(round(at_s, 1), round(gateway_rss, 1), round(collector, 1), round(os.getloadavg()[0], 1))


def load_specs(url: str, model: str, connections: int, duration_s: float) -> dict[str, LoadSpec]:
    headers = {"Content-Type": "application/json"}
    bodies = {"non-stream": request_body(model, stream=False, unique=True),
              "stream": request_body(model, stream=True, unique=True),
              "cache hits": request_body(model, stream=False, unique=False)}
    # One connection asks for cache hits: they are answered in a few milliseconds, and more
    # would take the CPU the provider path needs.
    return {kind: LoadSpec(url, body, headers, 1 if kind == "cache hits" else connections, duration_s, threads=1)
            for kind, body in bodies.items()}


def run_window(specs: dict[str, LoadSpec], generator: str) -> dict[str, LoadResult]:
    """The three loads at once, for one window."""
    with ThreadPoolExecutor(len(specs)) as pool:
        futures = {kind: pool.submit(run_load, spec, generator) for kind, spec in specs.items()}
        return {kind: future.result() for kind, future in futures.items()}


def counters(base_url: str) -> dict[str, float]:
    """What the features did, from /metrics: cache outcomes, guardrail actions, telemetry rows."""
    wanted = {"sluice_cache_requests_total": "status", "sluice_guardrail_actions_total": "guardrail",
              "sluice_telemetry_rows_written_total": "queue", "sluice_telemetry_rows_dropped_total": "queue",
              "sluice_requests_total": "status_class"}
    out: dict[str, float] = {}
    text = httpx.get(f"{base_url}/metrics", timeout=30, trust_env=False).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            label = wanted.get(sample.name)
            if label is not None:
                key = f"{sample.name.removeprefix('sluice_').removesuffix('_total')}{{{sample.labels.get(label, '')}}}"
                out[key] = out.get(key, 0.0) + sample.value
    return out


def run_soak(settings: SoakSettings, run_dir: Path, progress=partial(print, flush=True)) -> SoakReport:
    """Start the mock and the gateway, warm up, hold the load for `duration_s`, stop them."""
    generator = resolve_generator(settings.generator)
    run_dir.mkdir(parents=True, exist_ok=True)
    # The embedder's ONNX export is made once and kept: the gateway's data dir (start_sluice's
    # directory for the target "sluice:soak") is new each run.
    data_dir = run_dir / "sluice-soak" / "sluice-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    settings.model_cache.mkdir(parents=True, exist_ok=True)
    (data_dir / "models").symlink_to(settings.model_cache.resolve(), target_is_directory=True)
    mock, mock_port = start_mock(MockSettings(latency_ms=settings.latency_ms), run_dir)
    try:
        target = start_sluice(mock_port, run_dir, SOAK_CONFIG, name="sluice:soak", ready_timeout=180.0)
        assert target.process is not None
        try:
            base_url = target.url.rsplit("/v1/", 1)[0]
            if settings.warmup_s > 0:
                run_window(load_specs(target.url, target.model, settings.connections, settings.warmup_s), generator)
            report = SoakReport(settings, generator, memory(target.process, 0.0))
            progress(f"soak: {settings.duration_s:g} s of mixed load ({generator}), windows of "
                     f"{settings.window_s:g} s; start RSS gateway {report.start.gateway_rss_mb:.0f} MB, "
                     f"collector {report.start.collector_rss_mb:.0f} MB")
            started = time.monotonic()
            while (elapsed := time.monotonic() - started) < settings.duration_s - 0.5:
                length = min(settings.window_s, settings.duration_s - elapsed)
                results = run_window(load_specs(target.url, target.model, settings.connections, length), generator)
                at = time.monotonic() - started
                window = Window(round(at, 1), results, memory(target.process, at))
                report.windows.append(window)
                progress(f"  {at:6.0f} s  {window.requests / length:7.0f} req/s  errors {window.errors}  "
                         f"RSS gateway {window.sample.gateway_rss_mb:.0f} MB, "
                         f"collector {window.sample.collector_rss_mb:.0f} MB")
            report.counters = counters(base_url)
            return report
        finally:
            target.process.stop()
    finally:
        mock.stop()


# -- reporting ------------------------------------------------------------------------------


def _mb(sample: Sample) -> str:
    return f"{sample.gateway_rss_mb:.0f} / {sample.collector_rss_mb:.0f} MB"


def render(report: SoakReport, command: str, date: str, machine_lines: list[str]) -> str:
    """The soak's Markdown section (without its markers)."""
    s = report.settings
    growth, base = report.growth_pct(), report.growth_from()
    verdict = "under" if report.within_bound() else "OVER"
    rate = report.requests / report.seconds if report.seconds else 0.0
    p99 = {kind: report.p99_ms(kind) for kind in KINDS}
    middle, end = report.middle(), report.samples()[-1]
    summary = [
        "| figure | value |", "| --- | ---: |",
        f"| duration | {report.seconds:.0f} s ({len(report.windows)} windows of {s.window_s:g} s) |",
        f"| requests | {report.requests:,} ({rate:,.0f} req/s) |",
        *(f"| {kind}: req/s, p99 median / worst window | "
          f"{sum(w.results[kind].requests for w in report.windows) / report.seconds:,.0f}, "
          f"{p99[kind][0]:.1f} / {p99[kind][1]:.1f} ms |" for kind in KINDS),
        f"| errors (non-2xx + socket) | {report.errors} |",
        f"| RSS gateway / collector at start | {_mb(report.start)} |",
        f"| at the middle ({middle.at_s:.0f} s) | {_mb(middle)} |",
        f"| at the end ({end.at_s:.0f} s) | {_mb(end)} |",
        f"| RSS growth from {base.at_s:.0f} s to the end: gateway / collector / both | "
        f"{growth['gateway']:+.1f}% / {growth['collector']:+.1f}% / {growth['both']:+.1f}% "
        f"({verdict} the {s.max_growth_pct:g}% bound) |",
    ]
    windows = ["| end of window s | req/s | " + " | ".join(f"{k} p99 ms" for k in KINDS)
               + " | errors | RSS gateway MB | RSS collector MB | load avg |",
               "| ---: |" + " ---: |" * (len(KINDS) + 5)]
    previous = 0.0
    for w in report.windows:
        windows.append(f"| {w.ended_s:.0f} | {w.requests / max(w.ended_s - previous, 1e-9):,.0f} | "
                       + " | ".join(f"{w.results[k].p99_ms:.1f}" for k in KINDS)
                       + f" | {w.errors} | {w.sample.gateway_rss_mb:.0f} | {w.sample.collector_rss_mb:.0f} | "
                       f"{w.sample.load_1m:.1f} |")
        previous = w.ended_s
    features = ", ".join(f"{k} {v:,.0f}" for k, v in sorted(report.counters.items()))
    return "\n\n".join([
        "## Soak (generated)",
        (f"Written by `{command}` on {date}; `python -m bench soak` rewrites everything between the "
         "`soak:begin` / `soak:end` markers."),
        "\n".join(machine_lines),
        (f"Sluice with `bench/configs/soak.yaml` (traces and request rows through the collector process to "
         f"chDB, the semantic cache, PII and prompt-injection guardrails) in front of the mock at "
         f"{s.latency_ms:g} ms; three loads at once ({report.generator}): non-streamed "
         f"unique prompts and streamed unique prompts on {s.connections} connections each, and one repeated prompt "
         "(cache hits) on one. "
         "RSS is VmRSS of the gateway process and of its telemetry collector, read between windows."),
        "\n".join(summary),
        "\n".join(windows),
        (f"What the features did (from /metrics at the end): {features}. A 4xx count there is 499s: "
         "wrk closes its connections at the end of each window, requests in flight included. The load "
         "average column is the whole machine's (the load generator, the mock and anything else running)."),
    ])


def as_json(report: SoakReport) -> bytes:
    return orjson.dumps({
        "settings": asdict(report.settings), "generator": report.generator, "start": asdict(report.start),
        "windows": [{"ended_s": w.ended_s, "sample": asdict(w.sample),
                     "results": {k: asdict(r) for k, r in w.results.items()}} for w in report.windows],
        "requests": report.requests, "errors": report.errors, "seconds": report.seconds,
        "growth_from_s": report.growth_from().at_s, "growth_pct": report.growth_pct(),
        "within_bound": report.within_bound(), "counters": report.counters,
    }, option=orjson.OPT_INDENT_2, default=str)


def write_docs(path: Path, section: str) -> None:
    """Splice the section between the soak markers, appending them at the end the first time."""
    document = path.read_text() if path.exists() else "# Benchmarks\n"
    if BEGIN not in document and END not in document:
        path.write_text(document.rstrip("\n") + f"\n\n{BEGIN}\n{END}\n")
    write_section(path, section, begin=BEGIN, end=END)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration-s", type=float, default=600.0, help="measured seconds (default 10 minutes)")
    parser.add_argument("--window-s", type=float, default=30.0, help="seconds between memory samples")
    parser.add_argument("--warmup-s", type=float, default=5.0, help="load before the start sample (not measured)")
    parser.add_argument("--connections", type=int, default=4,
                        help="connections of the non-stream and of the stream load (cache hits: one)")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="mock latency before headers")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--max-growth-pct", type=float, default=10.0, help="RSS growth bound (exit 1 past it)")
    parser.add_argument("--model-cache", type=Path, default=MODEL_CACHE,
                        help="where the embedder's ONNX export is kept between runs")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--docs", type=Path, default=DOCS_PATH, help="the Markdown file whose soak section to rewrite")
    parser.add_argument("--no-docs", action="store_true", help="print only; leave the docs untouched")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    settings = SoakSettings(duration_s=args.duration_s, window_s=args.window_s, warmup_s=args.warmup_s,
                            connections=args.connections, latency_ms=args.latency_ms, generator=args.loadgen,
                            max_growth_pct=args.max_growth_pct, model_cache=args.model_cache)
    run_dir = args.results_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-soak"
    date = time.strftime("%Y-%m-%d %H:%M %Z")
    report = run_soak(settings, run_dir)
    section = render(report, "python -m bench " + shlex.join(["soak", *argv]), date, collect_machine().lines())
    (run_dir / "soak.json").write_bytes(as_json(report))
    (run_dir / "section.md").write_text(section + "\n")
    print("\n" + section)
    if args.no_docs:
        print(f"\n--no-docs: {args.docs} left as it is; section in {run_dir / 'section.md'}")
    else:
        write_docs(args.docs, section)
        print(f"\nwrote the soak section of {args.docs} (logs and soak.json in {run_dir})")
    if not report.within_bound():
        print(f"RSS grew {report.growth_pct()} from {report.growth_from().at_s:.0f} s: over the "
              f"{settings.max_growth_pct:g}% bound", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
