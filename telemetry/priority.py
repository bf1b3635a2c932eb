"""The collector's CPU priority: idle (SCHED_IDLE) while it keeps up, normal when it lags.

On a gateway host the collector's work (building spans, Arrow, the embedded ClickHouse's
inserts and merges) can wait; requests cannot. At SCHED_IDLE the kernel runs it only on
CPU nothing else wants, so tracing takes fewer cycles from the event loop (measured in
A/B runs: +13% traced throughput, docs/telemetry.md). A collector
starved that way would fall behind for good on a saturated host, so `PriorityGuard`, a
thread left at normal priority, watches the unread bytes on the collector's sockets and
raises the whole process to SCHED_OTHER while a backlog persists, and lowers it again once
it has been caught up for a while. Raising a thread out of SCHED_IDLE needs root or
CAP_SYS_NICE; without it the guard says so once, and overflow is counted where the rows
queue (the gateway's bounded queue, `sluice_telemetry_rows_dropped_total`).

Linux only (`os.sched_setscheduler`); elsewhere the collector runs at normal priority.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import struct
import termios
import threading
import time
from collections.abc import Callable, Iterable

log = logging.getLogger("sluice.telemetry")

_IDLE = getattr(os, "SCHED_IDLE", None)
_OTHER = getattr(os, "SCHED_OTHER", None)


def _set_policy(policy: int, keep: Iterable[int] = ()) -> bool:
    """Every thread of this process but `keep` to `policy`; False when not permitted."""
    skip = set(keep)
    ok = True
    for tid in os.listdir("/proc/self/task"):
        if int(tid) in skip:
            continue
        try:
            os.sched_setscheduler(int(tid), policy, os.sched_param(0))
        except ProcessLookupError:        # the thread ended meanwhile
            continue
        except PermissionError:
            ok = False
    return ok


def unread_bytes(sock: socket.socket) -> int:
    """Bytes received on `sock` and not read yet (0 when it cannot tell)."""
    try:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
    except OSError:
        return 0


class PriorityGuard:
    """Runs the process at SCHED_IDLE; raises it while `backlog()` stays high.

    The default threshold, 4 MB unread for 2 s, is about the gateway's socket buffer
    (`CollectorClient` asks for 4 MB): the gateway is then blocked on sending and its own
    queue grows. Shorter lags (the collector busy with one big insert) pass by themselves.
    """

    def __init__(self, backlog: Callable[[], int], *, high_bytes: int = 4 << 20, check_s: float = 0.5,
                 lag_checks: int = 4, calm_s: float = 30.0) -> None:
        self._backlog = backlog
        self._high = high_bytes
        self._check_s = check_s
        self._lag_checks = lag_checks
        self._calm_s = calm_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.raised = False
        self.raises = 0
        self._warned = False

    @staticmethod
    def supported() -> bool:
        return _IDLE is not None and os.path.isdir("/proc/self/task")

    def start(self) -> bool:
        """Start the guard thread (at normal priority), then lower every other thread,
        including the ones the collector starts later (they inherit the policy of the
        thread that creates them). False when idle priority is not available here."""
        if not self.supported():
            return False
        self._thread = threading.Thread(target=self._run, name="sluice-collector-priority", daemon=True)
        self._thread.start()
        while self._thread.native_id is None:
            time.sleep(0.001)
        if not _set_policy(_IDLE, keep=(self._thread.native_id,)):
            log.warning("telemetry collector: could not lower its priority; running at normal priority")
            self.stop()
            return False
        return True

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        lagging = 0
        calm_since = time.monotonic()
        while not self._stop.wait(self._check_s):
            backlog = self._backlog()
            if backlog >= self._high:
                lagging += 1
                calm_since = time.monotonic()
            else:
                lagging = 0
            if not self.raised and lagging >= self._lag_checks:
                self._raise(backlog)
            elif self.raised and backlog < self._high // 16 and time.monotonic() - calm_since >= self._calm_s:
                if _set_policy(_IDLE, keep=(threading.get_native_id(),)):
                    self.raised = False
                    log.info("telemetry collector: caught up; back to idle priority")

    def _raise(self, backlog: int) -> None:
        if _set_policy(_OTHER, keep=(threading.get_native_id(),)):
            self.raised = True
            self.raises += 1
            log.warning("telemetry collector: %d KB unread from the gateway: the host has no idle CPU "
                        "for it; running at normal priority until it catches up", backlog // 1024)
        elif not self._warned:
            self._warned = True
            log.warning("telemetry collector: %d KB unread from the gateway and no permission to raise its "
                        "priority (needs root or CAP_SYS_NICE): telemetry beyond the gateway's queue is "
                        "dropped and counted; set telemetry.collector_priority: normal to share the CPU",
                        backlog // 1024)
