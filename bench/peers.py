"""Other gateways measured in the same run as Sluice: LiteLLM proxy and the Portkey gateway.

Each peer is installed on first use into its own git-ignored directory under
`bench/.peers/` (never vendored), pinned to the version that installs and runs on these
machines, then started in front of the run's mock upstream and returned as a `Target`.
A failed install or start raises; the run turns that into a "not run" row.

Peers fork helpers of their own, so each one runs in a session of its own and is
stopped as a whole process group.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import orjson

from bench.processes import ManagedProcess, free_port
from bench.targets import HOST, Target

PEERS_DIR = Path(__file__).resolve().parent / ".peers"

# 1.109.1 needs a certifi release the registry lacks (see the project's ENVIRONMENT.md)
LITELLM_REQUIREMENT = "litellm[proxy]==1.106.2"
LITELLM_START_TIMEOUT = 180.0  # seconds; the proxy imports a lot before it listens
PORTKEY_PACKAGE = "@portkey-ai/gateway"
PORTKEY_VERSION = "1.15.2"
# without these pins the resolved hono / node-server answer every stream with 500
PORTKEY_OVERRIDES = {"@hono/node-server": "1.13.5", "hono": "4.9.7"}
INSTALL_TIMEOUT = 1200.0  # seconds, per install command
PUBLIC_MODEL = "bench-model"
MOCK_KEY = "sk-bench"  # the key the mock upstream is started with
_INSTALLED_MARKER = ".sluice-bench-installed"


# --- LiteLLM proxy ---------------------------------------------------------------------------


def ensure_litellm(peers_dir: Path = PEERS_DIR) -> Path:
    """The `litellm` executable of `peers_dir/litellm-venv`, creating the venv on first use."""
    venv = peers_dir / "litellm-venv"
    executable = venv / "bin" / "litellm"
    with _install_lock(peers_dir, "litellm"):
        if _is_installed(venv, LITELLM_REQUIREMENT) and executable.exists():
            return executable
        shutil.rmtree(venv, ignore_errors=True)  # a half-made venv from an interrupted install
        log = peers_dir / "litellm-install.log"
        started = _announce(f"installing {LITELLM_REQUIREMENT} into {venv} (first use, takes minutes)")
        _install_step([sys.executable, "-m", "venv", str(venv)], log, "litellm venv")
        _install_step([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", LITELLM_REQUIREMENT],
                      log, "litellm install", append=True)
        if not executable.exists():
            raise RuntimeError(f"litellm install left no {executable} (see {log})")
        _mark_installed(venv, LITELLM_REQUIREMENT)
        _announce(f"installed {LITELLM_REQUIREMENT} in {time.monotonic() - started:.0f} s")
    return executable


def litellm_config(mock_port: int) -> dict[str, object]:
    return {
        "model_list": [{
            "model_name": PUBLIC_MODEL,
            "litellm_params": {"model": "openai/m1", "api_base": f"http://{HOST}:{mock_port}/v1", "api_key": MOCK_KEY},
        }],
        # no database and no master key: LiteLLM refuses to start without this
        "general_settings": {"dangerously_permit_weak_or_unset_master_key": True},
    }


def start_litellm(mock_port: int, run_dir: Path, peers_dir: Path = PEERS_DIR) -> Target:
    """LiteLLM proxy, one worker, in front of the mock; public model `bench-model`."""
    executable = ensure_litellm(peers_dir)
    run_dir = run_dir / "litellm"
    run_dir.mkdir(parents=True, exist_ok=True)
    config = run_dir / "litellm.yaml"
    config.write_bytes(orjson.dumps(litellm_config(mock_port), option=orjson.OPT_INDENT_2))  # JSON is YAML
    port = free_port(HOST)
    # no telemetry, and the bundled price list instead of downloading it at start
    env = _peer_env(LITELLM_TELEMETRY="False", LITELLM_LOCAL_MODEL_COST_MAP="True")
    command = [str(executable), "--config", str(config), "--host", HOST, "--port", str(port), "--num_workers", "1"]
    process = ManagedProcess("litellm", command, run_dir / "litellm.log", cwd=run_dir, env=env, own_group=True)
    _wait_or_stop(process, f"http://{HOST}:{port}/health/liveliness", LITELLM_START_TIMEOUT)
    version = LITELLM_REQUIREMENT.rpartition("==")[2]
    return Target(f"litellm {version}", f"http://{HOST}:{port}/v1/chat/completions", PUBLIC_MODEL,
                  {"Authorization": f"Bearer {MOCK_KEY}"}, process)


# --- Portkey gateway -------------------------------------------------------------------------


def portkey_manifest() -> dict[str, object]:
    return {"name": "sluice-bench-portkey", "private": True,
            "dependencies": {PORTKEY_PACKAGE: PORTKEY_VERSION}, "overrides": PORTKEY_OVERRIDES}


def ensure_portkey(peers_dir: Path = PEERS_DIR) -> Path:
    """The Portkey gateway's start script under `peers_dir/portkey`, npm-installing it on first use."""
    home = peers_dir / "portkey"
    script = home / "node_modules" / PORTKEY_PACKAGE / "build" / "start-server.js"
    manifest = portkey_manifest()
    spec = orjson.dumps(manifest).decode()
    with _install_lock(peers_dir, "portkey"):
        if _is_installed(home, spec) and script.exists():
            return script
        npm = shutil.which("npm")
        if npm is None or shutil.which("node") is None:
            raise RuntimeError("portkey needs node and npm on PATH")
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        (home / "package.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
        log = peers_dir / "portkey-install.log"
        started = _announce(f"installing {PORTKEY_PACKAGE}@{PORTKEY_VERSION} into {home} (first use)")
        _install_step([npm, "install", "--no-audit", "--no-fund"], log, "portkey npm install", cwd=home)
        if not script.exists():
            raise RuntimeError(f"portkey install left no {script} (see {log})")
        _mark_installed(home, spec)
        _announce(f"installed {PORTKEY_PACKAGE}@{PORTKEY_VERSION} in {time.monotonic() - started:.0f} s")
    return script


def start_portkey(mock_port: int, run_dir: Path, peers_dir: Path = PEERS_DIR) -> Target:
    """The Portkey gateway (Node, headless), routed to the mock by headers; model `m1`."""
    script = ensure_portkey(peers_dir)
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("portkey needs node on PATH")
    run_dir = run_dir / "portkey"
    run_dir.mkdir(parents=True, exist_ok=True)
    port = free_port(HOST)
    home = script.parents[4]  # <home>/node_modules/@portkey-ai/gateway/build/start-server.js
    command = [node, str(script.relative_to(home)), f"--port={port}", "--headless"]
    process = ManagedProcess("portkey", command, run_dir / "portkey.log", cwd=home, env=_peer_env(), own_group=True)
    _wait_or_stop(process, f"http://{HOST}:{port}/", 60.0)
    headers = {"x-portkey-provider": "openai", "x-portkey-custom-host": f"http://{HOST}:{mock_port}/v1",
               "Authorization": f"Bearer {MOCK_KEY}"}
    return Target(f"portkey {PORTKEY_VERSION}", f"http://{HOST}:{port}/v1/chat/completions", "m1", headers, process)


# --- shared ----------------------------------------------------------------------------------


def _wait_or_stop(process: ManagedProcess, url: str, timeout: float) -> None:
    """Wait for `url` to answer; on failure stop the process before raising."""
    started = time.monotonic()
    try:
        process.wait_ready(url, timeout=timeout)
    except Exception:
        process.stop()
        raise
    _announce(f"{process.name} answered after {time.monotonic() - started:.1f} s")


def _peer_env(**extra: str) -> dict[str, str]:
    """The caller's environment minus its Python setup: the repo's top-level packages
    (gateway, cache, telemetry...) must not shadow a peer's imports."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}}
    return env | extra


@contextmanager
def _install_lock(peers_dir: Path, name: str) -> Iterator[None]:
    """Two runs starting at once install a peer once; the second waits for the first."""
    peers_dir.mkdir(parents=True, exist_ok=True)
    with (peers_dir / f".{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _is_installed(home: Path, spec: str) -> bool:
    marker = home / _INSTALLED_MARKER
    return marker.exists() and marker.read_text() == spec


def _mark_installed(home: Path, spec: str) -> None:
    (home / _INSTALLED_MARKER).write_text(spec)


def _install_step(command: Sequence[str], log: Path, what: str, *, cwd: Path | None = None,
                  append: bool = False) -> None:
    """Run one install command, output to `log`; a failure raises with its last line first."""
    with log.open("ab" if append else "wb") as out:
        out.write(f"$ {' '.join(command)}\n".encode())
        out.flush()
        try:
            done = subprocess.run(list(command), cwd=cwd, env=_peer_env(), stdout=out, stderr=subprocess.STDOUT,
                                  timeout=INSTALL_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise RuntimeError(f"{what} failed: {error} (see {log})") from error
    if done.returncode != 0:
        reason = _first_error(log.read_text(errors="replace").splitlines())
        raise RuntimeError(f"{what} failed (exit {done.returncode}): {reason[:200]} (see {log})")


def _first_error(lines: list[str]) -> str:
    """pip's "ERROR: ..." or npm's first "npm error" line past its code; else the last line."""
    for line in lines:
        text = line.strip()
        if text.startswith(("ERROR", "npm error", "npm ERR!")) and not text.split(" ", 2)[-1].startswith("code "):
            return text
    return next((line.strip() for line in reversed(lines) if line.strip()), "")


def _announce(message: str) -> float:
    print(f"[bench] {message}", file=sys.stderr, flush=True)
    return time.monotonic()
