"""`python -m bench soak`, bounded: 20 s of the real thing (mock, `sluice serve` with every
feature on, three loads at once) writes a well-formed report into the docs and soak.json.
Whether RSS stays flat is the 10-minute soak's question (`make soak`), not this test's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

from bench.soak import BEGIN, END, KINDS

REPO_ROOT = Path(__file__).resolve().parents[2]
DURATION_S, WINDOW_S = 20, 5


def test_soak_smoke_writes_a_well_formed_report(tmp_path: Path, model_cache_dir: Path) -> None:
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\nIntro.\n\n## Hand-written analysis\n\nKept as it is.\n")
    results = tmp_path / "results"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "soak", "--duration-s", str(DURATION_S), "--window-s", str(WINDOW_S),
         "--warmup-s", "1", "--connections", "2", "--loadgen", "python", "--docs", str(docs),
         "--results-dir", str(results), "--model-cache", str(model_cache_dir)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 1), done.stderr[-3000:]         # 1: RSS grew past the bound

    # soak.json: every window has all three loads, and the features did their work.
    [run_dir] = results.iterdir()
    report = orjson.loads((run_dir / "soak.json").read_bytes())
    windows = report["windows"]
    assert len(windows) == DURATION_S // WINDOW_S
    assert report["seconds"] >= DURATION_S - 1 and report["requests"] == sum(
        r["requests"] for w in windows for r in w["results"].values())
    for w in windows:
        assert set(w["results"]) == set(KINDS)
        assert all(r["requests"] > 0 and r["p99_ms"] > 0 for r in w["results"].values()), w
        assert w["sample"]["gateway_rss_mb"] > 0 and w["sample"]["collector_rss_mb"] > 0, w
    assert report["errors"] == 0
    assert set(report["growth_pct"]) == {"gateway", "collector", "both"}
    assert report["within_bound"] == (done.returncode == 0)
    counters = report["counters"]
    assert counters["cache_requests{hit}"] > 0 and counters["cache_requests{miss}"] > 0
    assert counters["guardrail_actions{pii}"] > 0
    assert counters["telemetry_rows_written{requests}"] > 0

    # The docs: the section between its markers, after the hand-written text, which is kept.
    text = docs.read_text()
    assert text.count(BEGIN) == text.count(END) == 1
    assert text.index("Kept as it is.") < text.index(BEGIN) < text.index(END)
    section = text[text.index(BEGIN):text.index(END)]
    for figure in ("| requests |", "| errors (non-2xx + socket) | 0 |", "| RSS gateway / collector at start |",
                   "| at the middle", "| at the end", "| RSS growth from", *(f"| {k}: req/s" for k in KINDS)):
        assert figure in section, figure
    window_rows = [line for line in section.splitlines() if line.startswith("| ") and line.split("|")[1].strip().isdigit()]
    assert len(window_rows) == len(windows)
    assert (run_dir / "section.md").read_text().strip() in text

    # A second run rewrites the section in place (here: the same text spliced again).
    from bench.soak import write_docs
    write_docs(docs, "## Soak (generated)\n\nagain")
    again = docs.read_text()
    assert again.count(BEGIN) == 1 and "again" in again and "Kept as it is." in again
