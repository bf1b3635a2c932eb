"""`sluice dashboards render`: a PNG per ClickHouse panel and an index page, from the same
SQL as the dashboards; a busy window and an idle one give different pictures."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from dashboards.catalog import dashboards
from dashboards.render import render

PNG = b"\x89PNG\r\n\x1a\n"
SOME = ("traffic", "cost", "quality")


def _pngs(rendered) -> dict[str, bytes]:
    return {f"{r.dashboard}/{r.title}": r.path.read_bytes() for r in rendered}


def test_busy_and_idle_windows_render_differently(traffic, ch, tmp_path):
    busy = render(ch, traffic.database, tmp_path / "busy", since=timedelta(hours=1))
    expected = sum(len(s.clickhouse_panels()) for s in dashboards().values())
    assert len(busy) == expected and not [r for r in busy if r.error]
    busy_png = _pngs(busy)
    assert all(b.startswith(PNG) and len(b) > 2000 for b in busy_png.values())
    index = (tmp_path / "busy" / "index.html").read_text()
    assert index.count("<img ") == expected
    assert all(r.path.relative_to(tmp_path / "busy").as_posix() in index for r in busy)

    # two days before the traffic: nothing in range
    idle = render(ch, traffic.database, tmp_path / "idle", since=timedelta(hours=1),
                  now=traffic.started - timedelta(days=2), only=SOME)
    assert {r.dashboard for r in idle} == set(SOME) and not [r for r in idle if r.error]
    idle_png = _pngs(idle)
    assert all(b.startswith(PNG) and len(b) > 1000 for b in idle_png.values())
    assert not [r.title for r in idle if r.has_data]
    with_data = [r for r in busy if r.dashboard in SOME and r.has_data]
    assert len(with_data) >= 25
    for r in with_data:
        key = f"{r.dashboard}/{r.title}"
        assert busy_png[key] != idle_png[key], key


def test_cli_renders_an_empty_database(tmp_path):
    """The command as installed: its own embedded chDB (a fresh one: nothing to show), one dashboard."""
    (tmp_path / "sluice.yaml").write_text(
        "telemetry:\n"
        f"  clickhouse_url: chdb://{tmp_path / 'chdb'}\n"
        "providers:\n  p:\n    type: openai\n    base_url: http://127.0.0.1:9/v1\n    api_key: x\n"
        "models:\n  m:\n    deployments:\n      - provider: p\n        model: m\n")
    out = tmp_path / "out"
    env = {**os.environ, "SLUICE_DATA_DIR": str(tmp_path / "data")}
    run = subprocess.run([sys.executable, "-m", "gateway.cli", "dashboards", "render", "--out", str(out),
                          "--since", "2h", "--config", str(tmp_path / "sluice.yaml"), "--dashboard", "cost"],
                         capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[2],
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    panels = len(dashboards()["cost"].clickhouse_panels())
    assert f"rendered {panels} panels (0 failed)" in run.stdout
    assert len(list((out / "cost").glob("*.png"))) == panels
    assert (out / "index.html").read_text().count("<img ") == panels
    bad = subprocess.run([sys.executable, "-m", "gateway.cli", "dashboards", "render", "--out", str(out),
                          "--since", "soon"], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2])
    assert bad.returncode == 2 and "--since" in bad.stderr
