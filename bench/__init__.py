"""Benchmark harness: `python -m bench` (see bench/README.md).

    run.py        one run: start servers, drive each target, collect rows
    targets.py    the servers compared (mock direct, Sluice), started as subprocesses
    loadgen.py    wrk (preferred) or asyncio + aiohttp load generation, one result shape
    processes.py  child processes: readiness, CPU seconds from /proc, stop
    report.py     the Markdown table
"""
