"""`python -m bench`: compare requests/s and latency of targets against the mock upstream.

`python -m bench suite [...]` runs every scenario and writes docs/benchmarks.md's
generated part (bench/suite.py); `python -m bench soak [...]` holds mixed load with every
feature on and watches memory (bench/soak.py); `python -m bench monitor [...]` measures the
drift monitor's cost over 1M generated rows (bench/monitor_cost.py); `python -m bench
inprocess [...]` the gateway's CPU per request without its HTTP server (bench/inprocess.py);
without any, one run and one table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.run import BenchSettings, print_report, run_benchmark
from bench.targets import DEFAULT_SLUICE_CONFIG, MockSettings


def parse_settings(argv: list[str] | None = None) -> BenchSettings:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     epilog="python -m bench suite --help: the scenario suite; "
                                            "python -m bench soak --help: the soak; "
                                            "python -m bench monitor --help: the drift monitor's cost; "
                                            "python -m bench inprocess --help: CPU per request without HTTP")
    parser.add_argument("--targets", default="direct,sluice", help="comma-separated, in order (direct first)")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per target")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per target (not measured)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure the targets in turn this many times; each keeps its median round")
    parser.add_argument("--stream", action="store_true", help="stream: true (+ include_usage)")
    parser.add_argument("--same-prompt", action="store_true",
                        help="send one identical prompt (lets a cache answer); default: unique prompts")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="mock latency before headers")
    parser.add_argument("--tokens-per-second", type=float, default=0.0, help="mock stream pacing")
    parser.add_argument("--output-tokens", type=int, default=16, help="words in each mock answer")
    parser.add_argument("--sluice-config", type=Path, default=DEFAULT_SLUICE_CONFIG)
    parser.add_argument("--gateway-key", default=None, help="Bearer key sent to Sluice (if its config wants one)")
    parser.add_argument("--cpus", default="", type=cpu_list,
                        help="run everything (mock, targets, Redis, load generator) on these CPUs, e.g. 0")
    args = parser.parse_args(argv)
    return BenchSettings(
        targets=tuple(t.strip() for t in args.targets.split(",") if t.strip()),
        duration=args.duration, warmup=args.warmup, connections=args.connections, stream=args.stream,
        unique_prompts=not args.same_prompt, generator=args.loadgen, rounds=max(1, args.rounds),
        mock=MockSettings(args.latency_ms, args.tokens_per_second, args.output_tokens),
        sluice_config=args.sluice_config, gateway_key=args.gateway_key, cpus=args.cpus,
    )


def cpu_list(text: str) -> tuple[int, ...]:
    """`"0"`, `"0,1"` -> (0,), (0, 1); "" -> () (no pinning)."""
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of CPU numbers: {text!r}") from None


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["suite"]:
        from bench import suite  # the suite's imports (machine facts, docs) only when asked for

        suite.main(argv[1:])
        return
    if argv[:1] == ["soak"]:
        from bench import soak

        sys.exit(soak.main(argv[1:]))
    if argv[:1] == ["monitor"]:
        from bench import monitor_cost

        sys.exit(monitor_cost.main(argv[1:]))
    if argv[:1] == ["inprocess"]:
        from bench import inprocess

        sys.exit(inprocess.main(argv[1:]))
    settings = parse_settings(argv)
    rows, run_dir = run_benchmark(settings)
    print_report(rows, run_dir, settings)


if __name__ == "__main__":
    main()
