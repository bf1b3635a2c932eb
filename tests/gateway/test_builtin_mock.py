"""The built-in mock provider `sluice serve` starts without config or keys stops with the
process: its uvloop thread still firing timers while the interpreter finalizes crashed
`sluice serve` with SIGSEGV after a clean SIGTERM drain, about one exit in two."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import atexit, threading, urllib.request
def report():      # registered first, so it runs after the gateway's own exit hooks
    alive = [t.name for t in threading.enumerate() if t.name == "sluice-mock-upstream"]
    print("alive at exit:", alive, flush=True)
atexit.register(report)
from gateway.defaults import resolve_config
cfg = resolve_config(None)
url = cfg.providers["mock-openai"].base_url
for _ in range(100):
    try:
        urllib.request.urlopen(url.rstrip("/") + "/_mock/requests", timeout=1)
        break
    except OSError:
        import time; time.sleep(0.05)
print("served", flush=True)
"""


def test_the_builtin_mock_stops_before_the_interpreter_finalizes(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "SLUICE_CONFIG")}
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "served" in done.stdout, done.stderr
    assert "alive at exit: []" in done.stdout, done.stdout + done.stderr
