"""`python -m bench.telemetry_cost` runs end to end (a subprocess: it opens its own chDB)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_telemetry_cost_prints_every_step():
    done = subprocess.run([sys.executable, "-m", "bench.telemetry_cost", "--requests", "300"], cwd=ROOT,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "300 requests, 600 spans" in done.stdout
    for step in ("encode entries", "decode frames", "SDK spans", "spans -> Arrow", "rows -> Arrow", "insert, rows", "insert, spans"):
        assert step in done.stdout
