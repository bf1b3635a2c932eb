"""`python -m bench inprocess`: the gateway's CPU per request without its HTTP server.

The app (`create_app` on a bench config) is driven by ASGI calls from `--callers`
concurrent tasks in this process; the upstream is the real mock over HTTP and a config
that names ${SLUICE_BENCH_REDIS_URL} gets a real Redis. Each round runs every target once,
in turn, each in a fresh process (a gateway per process, as in production); the table
gives each target's median CPU per request and its ratio to the first target.

What it is for: on this project's 2-vCPU VM the wrk bench (`python -m bench`) measures the
gateway together with the cost of waking the mock, Redis and wrk on the other vCPU, which
swings from round to round. Without the HTTP server and the load generator, what remains
is the gateway's own work per request (its pipeline, limits, telemetry) and its upstream
and Redis I/O, steady to a few percent: the figure to compare a change of the request
path by. It does not replace the wrk bench (the server's parsing and writing are out).

    python -m bench inprocess --targets keys,limits-local,limits --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = Path(__file__).resolve().parent / "configs"
GATEWAY_KEY = "sk-bench-inprocess"


def _config_text(target: str, mock_port: str, redis_url: str) -> str:
    template = (CONFIGS / f"{target}.yaml").read_text()
    return string.Template(template).safe_substitute(
        SLUICE_BENCH_MOCK_PORT=mock_port, SLUICE_BENCH_GATEWAY_KEY=GATEWAY_KEY, SLUICE_BENCH_REDIS_URL=redis_url)


async def _drive(app, requests: int, callers: int) -> float:
    """CPU seconds for `requests` chat completions through `app`, after a warm-up."""
    import orjson

    headers = [(b"host", b"bench"), (b"content-type", b"application/json"),
               (b"authorization", f"Bearer {GATEWAY_KEY}".encode())]

    async def one(n: int) -> None:
        body = orjson.dumps({"model": "bench-model", "messages": [{"role": "user", "content": f"question {n}"}]})
        sent = False
        status: list[int] = []

        async def receive() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()             # no disconnect: the app stops reading first
            return {}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
                 "query_string": b"", "root_path": "", "headers": headers, "client": ("127.0.0.1", 1),
                 "server": ("127.0.0.1", 8080), "state": {}}
        await app(scope, receive, send)
        if status != [200]:
            raise RuntimeError(f"request {n} answered {status}")

    async def caller(first: int, count: int) -> None:
        for n in range(first, first + count):
            await one(n)

    await asyncio.gather(*(caller(c * 10**7, 200 // callers + 1) for c in range(callers)))   # warm-up
    started = time.process_time()
    per_caller = max(1, requests // callers)
    await asyncio.gather(*(caller(10**9 + c * 10**7, per_caller) for c in range(callers)))
    return (time.process_time() - started) / (per_caller * callers)


async def _serve_and_drive(config: Path, requests: int, callers: int) -> float:
    from gateway.app import create_app
    from gateway.config import load_config

    app = create_app(load_config(config))
    inbox: asyncio.Queue = asyncio.Queue()
    outbox: asyncio.Queue = asyncio.Queue()
    lifespan = asyncio.ensure_future(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                                         inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    started = await outbox.get()
    if started["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"the gateway did not start: {started}")
    try:
        return await _drive(app, requests, callers)
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await outbox.get()
        await lifespan


def _one_target(target: str, mock_port: str, redis_url: str, requests: int, callers: int) -> float:
    """In this (fresh) process: µs of CPU per request for one target."""
    import uvloop

    with tempfile.TemporaryDirectory(prefix="sluice-inprocess-") as work:
        config = Path(work) / "sluice.yaml"
        config.write_text(_config_text(target, mock_port, redis_url))
        os.environ["SLUICE_DATA_DIR"] = str(Path(work) / "data")
        return uvloop.run(_serve_and_drive(config, requests, callers)) * 1e6


def _child(target: str, mock_port: str, redis_url: str, requests: int, callers: int) -> float:
    command = [sys.executable, "-m", "bench.inprocess", "--child", target, mock_port, redis_url,
               str(requests), str(callers)]
    out = subprocess.run(command, capture_output=True, text=True, check=False,
                         cwd=Path(__file__).resolve().parent.parent)
    if out.returncode != 0:
        raise RuntimeError(f"target {target} failed:\n{out.stderr[-2000:]}")
    return float(json.loads(out.stdout.strip().splitlines()[-1])["cpu_us"])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        target, mock_port, redis_url, requests, callers = argv[1:6]
        print(json.dumps({"cpu_us": _one_target(target, mock_port, redis_url, int(requests), int(callers))}))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench inprocess", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", default="keys,limits", help="bench/configs names; the first is the baseline")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=12000, help="measured requests per target and round")
    parser.add_argument("--callers", type=int, default=16, help="concurrent callers")
    args = parser.parse_args(argv)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    for target in targets:
        if not (CONFIGS / f"{target}.yaml").exists():
            parser.error(f"no bench/configs/{target}.yaml")

    from tests.mock_server import start_mock
    from tests.redis_server import start_redis

    base_url, stop_mock = start_mock(latency_ms=0)
    needs_redis = any("SLUICE_BENCH_REDIS_URL" in (CONFIGS / f"{t}.yaml").read_text() for t in targets)
    redis = start_redis(with_search=False) if needs_redis else None
    cpu: dict[str, list[float]] = {t: [] for t in targets}
    try:
        for n in range(args.rounds):
            for target in targets:
                cpu[target].append(_child(target, base_url.rsplit(":", 1)[1], redis.url if redis else "",
                                          args.requests, args.callers))
            print(f"round {n + 1}: " + ", ".join(f"{t} {cpu[t][-1]:.1f} µs" for t in targets), flush=True)
    finally:
        stop_mock()
        if redis is not None:
            redis.stop()
    baseline = statistics.median(cpu[targets[0]])
    print(f"\nin-process, {args.callers} callers, {args.requests:,} requests per target and round, "
          f"{args.rounds} rounds in turn (median)\n")
    print(f"| target | CPU µs per request | vs {targets[0]} (throughput at this CPU) | by round |")
    print("| --- | ---: | ---: | --- |")
    for target in targets:
        median = statistics.median(cpu[target])
        print(f"| {target} | {median:.1f} | {baseline / median:.1%} | "
              f"{' / '.join(f'{v:.0f}' for v in cpu[target])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
