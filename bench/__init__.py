"""Benchmark harness: `python -m bench` (see bench/README.md).

    run.py        one run: start servers, drive each target, collect rows
    suite.py      `python -m bench suite`: the scenarios (scenarios.py) in one go, docs written
    scenarios.py  the suite's scenarios, as data
    probe.py      TTFT of streams under load (one extra connection)
    machine.py    machine and versions for the docs
    docs_section.py  the generated part of docs/benchmarks.md, between its markers
    targets.py    the servers compared (mock direct, Sluice), started as subprocesses
    loadgen.py    wrk (preferred) or asyncio + aiohttp load generation, one result shape
    processes.py  child processes: readiness, CPU seconds and peak RSS from /proc, stop
    report.py     the Markdown table
"""
