"""Child processes of a benchmark run: start, wait until they answer, measure CPU, stop.

CPU is read from /proc (utime + stime of the process and its descendants), and so is
peak memory (VmHWM), so a multi-worker server is measured whole and no psutil is needed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class ManagedProcess:
    """One server under test; its output goes to a log file kept for the report on failure."""

    def __init__(self, name: str, command: Sequence[str], log_path: Path, *, cwd: Path | None = None,
                 env: Mapping[str, str] | None = None, own_group: bool = False) -> None:
        """`own_group`: start in a new session and stop the whole process group (servers
        that fork workers or helpers, such as the peers' proxies)."""
        self.name = name
        self.log_path = log_path
        self._own_group = own_group
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("wb")
        self._process = subprocess.Popen(list(command), cwd=cwd, env=dict(env) if env is not None else None,
                                         stdout=self._log, stderr=subprocess.STDOUT, start_new_session=own_group)

    @property
    def pid(self) -> int:
        return self._process.pid

    def wait_ready(self, url: str, timeout: float = 30.0) -> None:
        """Wait until `url` gives any HTTP answer (the status does not matter here)."""
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self._process.returncode}; log:\n{self.log_tail()}")
            try:
                httpx.get(url, timeout=1.0, trust_env=False)
                return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not answer {url} within {timeout}s; log:\n{self.log_tail()}")
            time.sleep(0.1)

    def cpu_seconds(self) -> float:
        """User + system CPU of the process and all its descendants so far."""
        return sum(_own_cpu(pid) for pid in _process_tree(self.pid))

    def peak_rss_mb(self) -> float:
        """Sum of each live process's peak resident set (VmHWM) over the tree, in MB.

        Each process's own peak: an upper bound for the tree's peak if they peaked at
        different times. Read while the processes still run (an exited worker is gone).
        """
        return sum(_peak_rss_kb(pid) for pid in _process_tree(self.pid)) / 1024

    def rss_mb(self) -> dict[int, float]:
        """Current resident set (VmRSS) of each live process of the tree, in MB, by pid."""
        return {pid: parse_status_kb(_read(Path(f"/proc/{pid}/status")), "VmRSS") / 1024
                for pid in _process_tree(self.pid)}

    def log_tail(self, lines: int = 30) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        if self._own_group:
            _signal_group(self.pid, signal.SIGTERM)
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._own_group:
            _signal_group(self.pid, signal.SIGKILL)      # helpers that outlived their leader
        self._log.close()


def command_line(pid: int) -> str:
    """A process's command line, arguments joined by spaces ("" if it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces; everything after its ")" is space separated
    return raw[raw.rindex(")") + 2 :].split()


def _own_cpu(pid: int) -> float:
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # fields[0] is field 3 (state): utime is field 14, stime field 15
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def _peak_rss_kb(pid: int) -> int:
    """VmHWM of one process in kB (0 if it is gone or a kernel thread)."""
    return parse_status_kb(_read(Path(f"/proc/{pid}/status")), "VmHWM")


def parse_status_kb(status: str, field: str) -> int:
    """A `Field:   1234 kB` line of /proc/<pid>/status, in kB (0 if absent)."""
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name == field:
            return int(value.split()[0])
    return 0


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _process_tree(root: int) -> list[int]:
    """`root` and its descendants: from /proc/<pid>/task/*/children where the kernel has
    them (CONFIG_PROC_CHILDREN), else from every process's parent in /proc/*/stat."""
    by_parent = None if _has_children_files(root) else _children_by_parent()
    tree, pending = [], [root]
    while pending:
        pid = pending.pop()
        tree.append(pid)
        pending.extend(_children_of(pid) if by_parent is None else by_parent.get(pid, []))
    return tree


def _has_children_files(pid: int) -> bool:
    return any(Path(f"/proc/{pid}/task").glob("*/children"))


def _children_of(pid: int) -> list[int]:
    return [int(child) for task in Path(f"/proc/{pid}/task").glob("*/children")
            for child in _read(task).split()]


def _children_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children
