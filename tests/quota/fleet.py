"""Several real `sluice serve` processes on one config (replicas sharing one Redis), and a
bounded asyncio load generator for them (127.0.0.1 only)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from tests.mock_server import REPO_ROOT, free_port


@dataclass
class Fleet:
    urls: list[str]
    processes: list[subprocess.Popen]
    logs: list[Path]

    def stop(self) -> None:
        for p in self.processes:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGTERM)
        for p in self.processes:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait()

    def log(self, i: int) -> str:
        return self.logs[i].read_text(errors="replace")


def start_fleet(cfg: dict, n: int, tmp: Path, env: dict[str, str] | None = None, timeout_s: float = 90.0) -> Fleet:
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "sluice.yaml"
    path.write_text(yaml.safe_dump(cfg))
    base_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    base_env.pop("OPENAI_API_KEY", None)
    base_env.pop("ANTHROPIC_API_KEY", None)
    urls, processes, logs = [], [], []
    for i in range(n):
        port = free_port()
        log = tmp / f"replica-{i}.log"
        logs.append(log)
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--config", str(path), "--port", str(port),
             "--log-level", "warning"],
            cwd=tmp, env={**base_env, "SLUICE_DATA_DIR": str(tmp / f"data-{i}")},
            stdout=log.open("wb"), stderr=subprocess.STDOUT))
        urls.append(f"http://127.0.0.1:{port}")
    fleet = Fleet(urls, processes, logs)
    deadline = time.monotonic() + timeout_s
    try:
        for i, url in enumerate(urls):
            while True:
                if processes[i].poll() is not None:
                    raise RuntimeError(f"replica {i} exited:\n{fleet.log(i)[-3000:]}")
                try:
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"replica {i} not ready:\n{fleet.log(i)[-3000:]}")
                time.sleep(0.1)
    except BaseException:
        fleet.stop()
        raise
    return fleet


@dataclass
class Outcome:
    replica: int
    status: int
    sent: float                       # monotonic
    done: float
    headers: dict[str, str]
    body: dict = field(default_factory=dict)


async def hammer(urls: list[str], key: str, clients: int, duration_s: float, body: dict,
                 stop_after: int | None = None, pause_s: float = 0.0) -> list[Outcome]:
    """`clients` concurrent loops, each on its own connection, client i on replica
    i % len(urls), for `duration_s` (or until `stop_after` answers in total)."""
    out: list[Outcome] = []
    end = time.monotonic() + duration_s
    headers = {"Authorization": f"Bearer {key}"}

    async def client(i: int) -> None:
        replica = i % len(urls)
        async with httpx.AsyncClient(base_url=urls[replica], timeout=10, trust_env=False) as http:
            while time.monotonic() < end and (stop_after is None or len(out) < stop_after):
                sent = time.monotonic()
                try:
                    resp = await http.post("/v1/chat/completions", json=body, headers=headers)
                    status, got, payload = resp.status_code, dict(resp.headers), resp.json()
                except httpx.HTTPError:
                    status, got, payload = 0, {}, {}
                out.append(Outcome(replica, status, sent, time.monotonic(), got, payload))
                if pause_s:
                    await asyncio.sleep(pause_s)

    await asyncio.gather(*(client(i) for i in range(clients)))
    return out


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total
