"""`python -m bench suite`: every scenario of bench/scenarios.py in one invocation, one
table each, then the generated part of docs/benchmarks.md.

Scenarios run one after the other, each with its own mock process (same binary, the
scenario's latency and pacing) and its targets started and stopped in turn.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from bench.docs_section import Table, render_section, write_section
from bench.machine import collect_machine
from bench.report import markdown_table
from bench.run import RESULTS_DIR, describe, run_benchmark
from bench.scenarios import SCENARIOS, Scenario, select
from bench.targets import REPO_ROOT

DOCS_PATH = REPO_ROOT / "docs" / "benchmarks.md"


def parse_args(argv: list[str]) -> argparse.Namespace:
    keys = "; ".join(f"{s.key}: {s.title}" for s in SCENARIOS)
    parser = argparse.ArgumentParser(prog="python -m bench suite", description=__doc__)
    parser.add_argument("--scenarios", default="", help=f"comma-separated keys, default all ({keys})")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per target")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per target (not measured)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--no-docs", action="store_true", help="print the tables only; leave docs untouched")
    parser.add_argument("--docs", type=Path, default=DOCS_PATH,
                        help="the Markdown file whose generated part to rewrite")
    args = parser.parse_args(argv)
    try:
        args.selected = select(args.scenarios)
    except ValueError as error:
        parser.error(str(error))
    return args


def run_scenario(scenario: Scenario, args: argparse.Namespace, suite_dir: Path) -> Table:
    settings = scenario.settings(args.duration, args.warmup, args.connections, args.loadgen)
    heading = f"{scenario.key}. {scenario.title}"
    print(f"\n### {heading}\n{describe(settings)}\n", flush=True)
    try:
        rows, _ = run_benchmark(settings, suite_dir / scenario.key)
        markdown = markdown_table(rows, settings.stream)
    except Exception as error:  # e.g. the mock would not start: the other scenarios still run
        markdown = f"not run: {str(error).splitlines()[0]}"
    print(markdown, flush=True)
    return Table(heading, describe(settings), markdown)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    suite_dir = RESULTS_DIR / f"{time.strftime('%Y%m%d-%H%M%S')}-suite"
    date = time.strftime("%Y-%m-%d %H:%M %Z")
    tables = [run_scenario(scenario, args, suite_dir) for scenario in args.selected]
    command = "python -m bench " + shlex.join(["suite", *argv])
    section = render_section(date, command, collect_machine().lines(), tables)
    suite_dir.mkdir(parents=True, exist_ok=True)
    (suite_dir / "section.md").write_text(section + "\n")
    if args.no_docs:
        print(f"\n--no-docs: {args.docs} left as it is; section in {suite_dir / 'section.md'}")
        return
    write_section(args.docs, section)
    print(f"\nwrote the generated part of {args.docs} (logs and results.json in {suite_dir})")


if __name__ == "__main__":
    main(sys.argv[1:])
