"""Load generators: wrk (preferred) and an asyncio + aiohttp fallback, one result shape.

Client and servers share the machine's cores, so absolute figures mean little; the
harness compares targets measured by the same generator in the same run.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


UNIQUE_MARKER = "__UNIQUE__"


@dataclass(frozen=True)
class LoadSpec:
    """What every target gets: the same POST, connections and duration.

    If the body contains UNIQUE_MARKER, each request replaces it with a value unique to
    the run, so no cache in front of the provider can answer (the bench measures the
    proxy path, not a cache hit).
    """

    url: str
    body: bytes
    headers: Mapping[str, str]
    connections: int = 16
    duration: float = 10.0
    threads: int = 2  # wrk threads

    def body_parts(self) -> tuple[bytes, bytes] | None:
        """(prefix, suffix) around the marker, or None for a fixed body."""
        prefix, marker, suffix = self.body.partition(UNIQUE_MARKER.encode())
        return (prefix, suffix) if marker else None


@dataclass(frozen=True)
class LoadResult:
    generator: str
    requests: int
    seconds: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: int  # non-2xx answers + socket errors
    requests_per_second: float


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run_load(spec: LoadSpec, generator: str) -> LoadResult:
    """Run `generator` ("wrk" or "python") against the spec's URL."""
    return run_wrk(spec) if generator == "wrk" else run_python(spec)


# --- wrk -------------------------------------------------------------------------------------


# wrk's own --latency table has p50/75/90/99 only; `done()` prints the ones the report
# needs from the same histogram, in microseconds, on one line parse_wrk looks for
PERCENTILES_LINE = "sluice-bench-percentiles-us"
_DONE = (
    "function done(summary, latency, requests)\n"
    f'  io.write(string.format("{PERCENTILES_LINE} p50=%d p95=%d p99=%d\\n",\n'
    "    latency:percentile(50), latency:percentile(95), latency:percentile(99)))\n"
    "end"
)


def wrk_script(spec: LoadSpec) -> str:
    """A Lua script giving wrk the POST body and headers (long brackets: no escaping needed).

    With a unique marker, `request()` builds each body from a run nonce, the wrk thread's
    number (set in `setup`) and a per-thread counter. `done()` prints p50/p95/p99.
    """
    lines = ['wrk.method = "POST"']
    lines.extend(f'wrk.headers["{name}"] = [==[{value}]==]' for name, value in spec.headers.items())
    parts = spec.body_parts()
    if parts is None:
        lines.append(f"wrk.body = [==[{spec.body.decode()}]==]")
    else:
        nonce = os.urandom(4).hex()
        lines += [
            f"local prefix = [==[{parts[0].decode()}]==]",
            f"local suffix = [==[{parts[1].decode()}]==]",
            "local threads = 0",
            'function setup(thread) thread:set("thread_id", threads); threads = threads + 1 end',
            "local counter = 0",
            "function request()",
            "  counter = counter + 1",
            f'  return wrk.format(nil, nil, nil, prefix .. "{nonce}-" .. (thread_id or 0) .. "-" .. counter .. suffix)',
            "end",
        ]
    lines.append(_DONE)
    return "\n".join(lines) + "\n"


def run_wrk(spec: LoadSpec) -> LoadResult:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(wrk_script(spec))
    try:
        seconds = max(1, round(spec.duration))
        command = ["wrk", f"-t{min(spec.threads, spec.connections)}", f"-c{spec.connections}", f"-d{seconds}s",
                   "--timeout", "30s", "--latency", "-s", script.name, spec.url]
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=False)
    finally:
        Path(script.name).unlink(missing_ok=True)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return parse_wrk(done.stdout)


def parse_wrk(output: str) -> LoadResult:
    """Read requests, duration, p50/p95/p99 and errors out of wrk's report.

    Percentiles come from the script's `done()` line; without it (a script of another
    shape) from the --latency table, which has no p95.
    """
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", output)
    if total is None:
        raise ValueError(f"unexpected wrk output:\n{output}")
    percentiles = {int(p): float(v) * _UNITS[u] for p, v, u in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m)\s*$",
                                                                            output, re.MULTILINE)}
    ours = re.search(PERCENTILES_LINE + r" p50=(\d+) p95=(\d+) p99=(\d+)", output)
    if ours:
        percentiles = {p: int(v) / 1e3 for p, v in zip((50, 95, 99), ours.groups(), strict=True)}
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    errors = (int(non_2xx.group(1)) if non_2xx else 0) + (sum(map(int, sockets.groups())) if sockets else 0)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    requests, seconds = int(total.group(1)), float(total.group(2)) * _UNITS[total.group(3)] / 1e3
    nan = float("nan")
    return LoadResult("wrk", requests, seconds, percentiles.get(50, nan), percentiles.get(95, nan),
                      percentiles.get(99, nan), errors, float(rate.group(1)) if rate else requests / seconds)


# --- asyncio + aiohttp fallback --------------------------------------------------------------


def run_python(spec: LoadSpec) -> LoadResult:
    """The fallback generator, on uvloop when available (keeps the client side cheap)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_python_load(spec))
    return uvloop.run(_python_load(spec))


async def _python_load(spec: LoadSpec) -> LoadResult:
    latencies: list[float] = []
    errors = 0
    parts = spec.body_parts()
    nonce = os.urandom(4).hex()
    counter = 0

    def next_body() -> bytes:
        nonlocal counter
        if parts is None:
            return spec.body
        counter += 1
        return parts[0] + f"{nonce}-{counter}".encode() + parts[1]
    connector = aiohttp.TCPConnector(limit=spec.connections, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=dict(spec.headers)) as session:
        started = time.perf_counter()
        deadline = started + spec.duration

        async def worker() -> None:
            nonlocal errors
            while (sent := time.perf_counter()) < deadline:
                try:
                    async with session.post(spec.url, data=next_body()) as response:
                        await response.read()
                        failed = response.status >= 300
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    failed = True
                latencies.append(time.perf_counter() - sent)
                errors += failed

        await asyncio.gather(*(worker() for _ in range(spec.connections)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return LoadResult("python", len(latencies), elapsed, percentile(latencies, 50) * 1e3,
                      percentile(latencies, 95) * 1e3, percentile(latencies, 99) * 1e3, errors,
                      len(latencies) / elapsed)


def percentile(ordered: list[float], percent: float) -> float:
    """Nearest-rank percentile of an ascending list (nan when empty)."""
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(percent / 100 * len(ordered)) - 1))
    return ordered[index]
