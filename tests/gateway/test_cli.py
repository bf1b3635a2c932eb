"""The `sluice` command line, run as a user would (subprocesses: chDB is one per process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from telemetry.schema import CURRENT_VERSION

ROOT = Path(__file__).resolve().parents[2]


def sluice(*args: str, data_dir: Path, config: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "SLUICE_DATA_DIR": str(data_dir)}
    cmd = [sys.executable, "-m", "gateway.cli", *args]
    if config is not None:
        cmd += ["--config", str(config)]
    return subprocess.run(cmd, cwd=data_dir, env=env, capture_output=True, text=True, timeout=120)


def test_invalid_config_names_the_key(tmp_path):
    bad = tmp_path / "sluice.yaml"
    bad.write_text("providers:\n  p: {type: openai, base_url: 'http://x'}\n"
                   "models:\n  m: {deployments: [{provider: q, model: x}]}\n")
    result = sluice("check-config", data_dir=tmp_path, config=bad)
    assert result.returncode == 2
    assert "models.m.deployments[0].provider: unknown provider 'q'" in result.stderr


def test_migrate_then_report_on_the_embedded_clickhouse(tmp_path):
    config = tmp_path / "sluice.yaml"
    config.write_text("providers: {}\nmodels: {}\n")
    migrated = sluice("migrate", data_dir=tmp_path, config=config)
    assert migrated.returncode == 0, migrated.stderr
    assert f"applied migrations {list(range(1, CURRENT_VERSION + 1))}" in migrated.stdout
    again = sluice("migrate", data_dir=tmp_path, config=config)
    assert "already up to date" in again.stdout
    # No gateway listens on this port: the report opens the embedded chDB itself.
    report = sluice("report", "--since", "1h", "--gateway", "http://127.0.0.1:9", data_dir=tmp_path, config=config)
    assert report.returncode == 0, report.stderr
    assert "Sluice report: last 1h, by model" in report.stdout


def test_migrate_while_the_embedded_engine_is_held_says_so_in_one_line(tmp_path):
    """A running `sluice serve` holds the embedded chDB; `sluice migrate` beside it explains
    that, without a traceback and without starting (or announcing) the mock provider."""
    config = tmp_path / "sluice.yaml"
    config.write_text("providers: {}\nmodels: {}\n")
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom telemetry.clickhouse import open_client\n"
         f"held = open_client('chdb://{tmp_path / '.sluice' / 'clickhouse'}')\nheld.command('CREATE DATABASE IF NOT EXISTS held')\nprint('held', flush=True)\ntime.sleep(60)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = sluice("migrate", data_dir=tmp_path / ".sluice")
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "MOCK" not in result.stderr + result.stdout
    # our one line, and at most the engine's own line (chDB writes it to the fd itself)
    assert "in use" in result.stderr and len(result.stderr.strip().splitlines()) <= 2
