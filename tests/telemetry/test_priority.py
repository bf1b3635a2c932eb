"""The collector's CPU priority: idle while it keeps up, normal while it lags (Linux)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from telemetry import priority
from telemetry.priority import PriorityGuard

pytestmark = pytest.mark.skipif(not PriorityGuard.supported(), reason="needs Linux scheduling policies")

_PROBE = r"""
import json, os, threading, time, logging
logging.basicConfig(level=logging.INFO)
from telemetry.priority import PriorityGuard
backlog = [0]
guard = PriorityGuard(lambda: backlog[0], high_bytes=100, check_s=0.02, lag_checks=2, calm_s=0.2)
started = guard.start()
worker = threading.Thread(target=time.sleep, args=(5,)); worker.start()   # created after: inherits
def policies():
    return sorted({os.sched_getscheduler(int(t)) for t in os.listdir("/proc/self/task")
                   if int(t) != guard._thread.native_id})
def wait(cond):
    deadline = time.monotonic() + 5
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.01)
out = {"started": started, "idle": policies(), "guard": os.sched_getscheduler(guard._thread.native_id)}
backlog[0] = 1000; wait(lambda: guard.raised); out["raised"] = policies()
backlog[0] = 0; wait(lambda: not guard.raised); out["calm"] = policies()
print(json.dumps(out))
os._exit(0)
"""


def test_the_collector_runs_idle_and_is_raised_while_it_lags():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": root})
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["started"] is True
    assert out["idle"] == [os.SCHED_IDLE] and out["guard"] == os.SCHED_OTHER
    if os.geteuid() == 0:                     # raising out of SCHED_IDLE needs the privilege
        assert out["raised"] == [os.SCHED_OTHER]
        assert out["calm"] == [os.SCHED_IDLE]
        assert "running at normal priority until it catches up" in done.stderr
        assert "back to idle priority" in done.stderr


def test_without_permission_to_raise_it_warns_once(monkeypatch, caplog):
    calls = []

    def refuse(policy, keep=()):
        calls.append(policy)
        return policy == priority._IDLE          # lowering is always allowed, raising is not

    monkeypatch.setattr(priority, "_set_policy", refuse)
    guard = PriorityGuard(lambda: 1 << 30, check_s=0.01, lag_checks=1)
    assert guard.start()
    deadline = time.monotonic() + 5
    while calls.count(priority._OTHER) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    guard.stop()
    assert not guard.raised and calls.count(priority._OTHER) >= 3
    warnings = [r for r in caplog.records if "no permission to raise" in r.getMessage()]
    assert len(warnings) == 1
