"""The servers a run compares: the mock upstream (direct) and Sluice in front of it.

Each target is an HTTP endpoint plus the process whose CPU the run reports; a new peer
(another gateway) is one more `start_*` function returning a `Target`.
"""

from __future__ import annotations

import os
import string
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench.processes import ManagedProcess, free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIGS_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_SLUICE_CONFIG = CONFIGS_DIR / "bare.yaml"
HOST = "127.0.0.1"


@dataclass
class Target:
    name: str
    url: str  # what the load generator POSTs to
    model: str
    headers: dict[str, str] = field(default_factory=dict)
    process: ManagedProcess | None = None  # the gateway process (None: straight to the mock)
    companions: list = field(default_factory=list)  # what it needs, stopped after it (a Redis)


@dataclass(frozen=True)
class MockSettings:
    latency_ms: float = 0.0
    tokens_per_second: float = 0.0
    output_tokens: int = 16


def start_mock(settings: MockSettings, run_dir: Path) -> tuple[ManagedProcess, int]:
    """The mock upstream, one process, as `python -m gateway.mock`."""
    port = free_port(HOST)
    command = [sys.executable, "-m", "gateway.mock", "--host", HOST, "--port", str(port),
               "--latency-ms", str(settings.latency_ms), "--tokens-per-second", str(settings.tokens_per_second),
               "--output-tokens", str(settings.output_tokens), "--api-key", "sk-bench"]
    process = ManagedProcess("mock upstream", command, run_dir / "mock.log", cwd=REPO_ROOT, env=_env())
    try:
        process.wait_ready(f"http://{HOST}:{port}/_mock/health")
    except Exception:
        process.stop()
        raise
    return process, port


def direct_target(mock_port: int) -> Target:
    return Target("direct (mock)", f"http://{HOST}:{mock_port}/v1/chat/completions", "m1",
                  {"Authorization": "Bearer sk-bench"})


def sluice_executable() -> Path:
    return Path(sys.prefix) / "bin" / "sluice"


# A config that names ${SLUICE_BENCH_REDIS_URL} gets a Redis of its own (plain Redis 8, from
# the test extras), started before the gateway and stopped after it; one that names
# ${SLUICE_BENCH_GATEWAY_KEY} is sent this key (limits need a key to count against).
BENCH_GATEWAY_KEY = "sk-bench-gateway-key"


def start_sluice(mock_port: int, run_dir: Path, config_template: Path = DEFAULT_SLUICE_CONFIG,
                 gateway_key: str | None = None, name: str = "sluice", ready_timeout: float = 30.0) -> Target:
    """`sluice serve` on a rendered copy of the bench config, pointed at this run's mock;
    `ready_timeout`: seconds it may take to answer (loading guardrail and embedding models)."""
    executable = sluice_executable()
    if not executable.exists():
        raise RuntimeError(f"{executable} does not exist (is the project installed in this venv?)")
    run_dir = run_dir / name.replace(":", "-")
    run_dir.mkdir(parents=True, exist_ok=True)
    config = run_dir / "sluice.yaml"
    template = config_template.read_text()
    companions: list = []
    extra: dict[str, str] = {}
    if "SLUICE_BENCH_REDIS_URL" in template:
        from tests.redis_server import start_redis
        redis = start_redis(with_search=False)
        companions.append(redis)
        extra["SLUICE_BENCH_REDIS_URL"] = redis.url
    if "SLUICE_BENCH_GATEWAY_KEY" in template:
        gateway_key = gateway_key or BENCH_GATEWAY_KEY
        extra["SLUICE_BENCH_GATEWAY_KEY"] = gateway_key
    config.write_text(string.Template(template).safe_substitute(SLUICE_BENCH_MOCK_PORT=str(mock_port), **extra))
    port = free_port(HOST)
    env = _env(SLUICE_BENCH_MOCK_PORT=str(mock_port), SLUICE_DATA_DIR=str(run_dir / "sluice-data"))
    command = [str(executable), "serve", "--config", str(config), "--host", HOST, "--port", str(port)]
    process = ManagedProcess("sluice", command, run_dir / "sluice.log", cwd=run_dir, env=env)
    try:
        process.wait_ready(f"http://{HOST}:{port}/", ready_timeout)
    except Exception:
        process.stop()
        for companion in companions:
            companion.stop()
        raise
    headers = {"Authorization": f"Bearer {gateway_key}"} if gateway_key else {}
    return Target(name, f"http://{HOST}:{port}/v1/chat/completions", "bench-model", headers, process, companions)


def _env(**extra: str) -> dict[str, str]:
    pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": pythonpath, **extra}
