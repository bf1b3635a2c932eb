"""What a benchmark ran on: cores, CPU model, RAM, Python and the versions of the
libraries on the hot path, the load generator and the peers, for the generated docs."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from bench.peers import LITELLM_REQUIREMENT, PORTKEY_VERSION
from bench.targets import REPO_ROOT

# the gateway's serving path, telemetry and the embedded ClickHouse
LIBRARIES = ("uvicorn", "uvloop", "httptools", "aiohttp", "orjson", "opentelemetry-sdk", "chdb", "clickhouse-connect")


@dataclass(frozen=True)
class Machine:
    cores: int
    cpu_model: str
    ram_gib: float
    system: str
    python: str
    sluice: str  # package version and git commit
    libraries: tuple[tuple[str, str], ...]
    wrk: str
    peers: tuple[tuple[str, str], ...]

    def lines(self) -> list[str]:
        """Markdown bullet lines."""
        libraries = ", ".join(f"{name} {version}" for name, version in self.libraries)
        peers = ", ".join(f"{name} {version}" for name, version in self.peers)
        return [
            f"- Machine: {self.cores} cores ({self.cpu_model}), {self.ram_gib:.1f} GiB RAM, {self.system}",
            f"- Python {self.python}; {libraries}",
            f"- Sluice {self.sluice}; load generator wrk {self.wrk}; peers (pinned in bench/peers.py): {peers}",
        ]


def collect_machine() -> Machine:
    return Machine(
        cores=os.cpu_count() or 0,
        cpu_model=cpu_model(_read("/proc/cpuinfo")) or platform.processor() or platform.machine(),
        ram_gib=mem_total_kib(_read("/proc/meminfo")) / 2**20,
        system=f"{platform.system()} {platform.release()}",
        python=platform.python_version(),
        sluice=f"{_version('sluice-gateway')} ({git_revision()})",
        libraries=tuple((name, _version(name)) for name in LIBRARIES),
        wrk=wrk_version(),
        peers=(("litellm", LITELLM_REQUIREMENT.rpartition("==")[2]), ("portkey", PORTKEY_VERSION)),
    )


def cpu_model(cpuinfo: str) -> str:
    """The first `model name` of /proc/cpuinfo ("" where the kernel gives none, e.g. ARM)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return ""


def mem_total_kib(meminfo: str) -> int:
    for line in meminfo.splitlines():
        key, _, value = line.partition(":")
        if key == "MemTotal":
            return int(value.split()[0])
    return 0


def wrk_version() -> str:
    """`wrk -v`'s version word ("debian/4.1.0-3+b2"); wrk exits 1 after printing it."""
    if shutil.which("wrk") is None:
        return "not installed"
    done = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10, check=False)
    words = (done.stdout or done.stderr).split()
    return words[1] if len(words) > 1 and words[0] == "wrk" else "unknown"


def git_revision() -> str:
    """Short commit of the checkout, "+ local changes" when tracked files differ."""
    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True,
                                  timeout=10, check=False)
        except OSError:
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""
    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "no git"
    return f"git {commit}" + (" + local changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""
