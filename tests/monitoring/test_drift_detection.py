"""Each synthetic shift, generated through a real gateway, is caught by the metric meant for it;
a stable stream with natural variation raises no alert over 20 windows; a team's own prompt
change is a model_events row, not drift.

The scenarios and the traffic are in drift_harness.py. Runs are placed on the rounds of
traffic (`now=`), with windows of the round's length (about a second): the runner sees
exactly what it would see in production with window_s = 1 h, only smaller. The detection
table is printed at the end of the module (docs/monitoring.md, "Drift", shows it).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import pytest

from monitoring.config import MonitoringConfig
from monitoring.runner import RunResult, run_once
from tests.mock_server import start_mock
from tests.monitoring import drift_harness as harness

_db = itertools.count()
ALERT_AFTER_RUNS = 2
STALL_S = 0.5
LATENCY_METRICS = ("latency_p50_ms", "latency_p95_ms", "ttft_p50_ms")


@dataclass
class Drift:
    traffic: harness.Traffic
    runs: dict[int, RunResult]          # round index -> the run placed on it
    run_seconds: list[float]
    traffic_seconds: float
    database: str


# Latency here is the caller's through a gateway that shares a loaded 2-core machine with
# the test and other test runs: a busy stretch adds hundreds of milliseconds to a window
# that no provider caused. Latency metrics get +100% and at least +300 ms in this test, and
# the regression it plants is +2 s on ~150 ms answers (a brownout, well clear of what the
# machine does); production keeps the defaults.
TEST_LATENCY = {"threshold": 1.0, "min_delta": 300.0}


def monitor_config(window_s: float, baseline_s: float) -> MonitoringConfig:
    return MonitoringConfig(window_s=window_s, baseline_s=baseline_s, interval_s=1, min_samples=30,
                            metrics={m: TEST_LATENCY for m in LATENCY_METRICS},
                            alert_after_runs=ALERT_AFTER_RUNS, embedding_sample=100, text_sample=60,
                            embed_max_texts=300)     # the stable stream's prompts only (the busiest)


@pytest.fixture(scope="module")
def embedder(model_cache_dir):
    """The cache's local MiniLM, for the prompts stored without an embedding."""
    import asyncio

    from cache.embedders import LocalEmbedder
    local = LocalEmbedder(model_cache_dir)
    asyncio.run(local.start())
    yield harness.MemoEmbedder(local)
    asyncio.run(local.aclose())


@pytest.fixture(scope="module")
def drift(ch, chdb_url, tmp_path_factory, model_cache_dir, embedder) -> Drift:
    database = f"drift_{next(_db)}"
    data_dir = tmp_path_factory.mktemp("drift-data")
    (data_dir / "models").symlink_to(model_cache_dir)         # the session's ONNX export of the embedder
    mock_url, stop_mock = start_mock()
    gw = harness.start(mock_url, chdb_url, database, str(data_dir))
    try:
        started = time.perf_counter()
        traffic = harness.send_rounds(gw, mock_url)
        traffic_seconds = time.perf_counter() - started
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if ch.command(f"SELECT count() FROM `{database}`.llm_requests") >= traffic.sent + traffic.warmup:
                break
            time.sleep(0.1)
    finally:
        gw.stop()
        stop_mock()
    runs: dict[int, RunResult] = {}
    seconds = []
    for index in range(harness.FIRST_RUN_ROUND, len(traffic.rounds)):
        now, window_s, baseline_s = harness.run_window(traffic.rounds, index)
        t0 = time.perf_counter()
        runs[index] = run_once(ch, database, monitor_config(window_s, baseline_s), now=now, embedder=embedder)
        seconds.append(time.perf_counter() - t0)
    return Drift(traffic, runs, seconds, traffic_seconds, database)


def _stalled_windows(drift: Drift, windows: list[int]) -> set[int]:
    """Windows in which the test machine itself stalled: the probe's 20 ms sleeps woke over
    STALL_S late, or twice as late on average as in the median window."""
    rounds, probe = drift.traffic.rounds, drift.traffic.probe
    lateness = {i: probe.mean(rounds[i - 1].start, rounds[i].end) for i in windows}
    usual = sorted(lateness.values())[len(lateness) // 2]
    return {i for i in windows if probe.worst(rounds[i - 1].start, rounds[i].end) > STALL_S or lateness[i] > 2 * usual}


def _unexplained_alerts(drift: Drift, public: str, windows: list[int]) -> tuple[list, list]:
    """(alerts, latency alerts in windows where the machine stalled) of a model's runs."""
    stalled = _stalled_windows(drift, sorted(drift.runs))
    alerts = [(i, r.metric, r.value, r.threshold) for i in windows for r in _rows(drift.runs[i], public) if r.alerting]
    excused = [a for a in alerts if a[0] in stalled and a[1] in LATENCY_METRICS]
    return [a for a in alerts if a not in excused], excused


def _rows(result: RunResult, public: str, metric: str | None = None):
    return [m for m in result.metrics if m.public_model == public and (metric is None or m.metric == metric)]


def _detection(drift: Drift, scenario: harness.Scenario) -> tuple[int | None, object]:
    """(windows from the first one holding shifted traffic to the first alert of the
    scenario's metric, that row)."""
    for index in range(harness.SHIFT_ROUND, scenario.rounds):
        for row in _rows(drift.runs[index], scenario.public, scenario.metric):
            if row.alerting:
                return index - harness.SHIFT_ROUND + 1, row
    return None, None


SHIFTS = [s for s in harness.SCENARIOS if s.metric]
TABLE: list[list[str]] = []


def test_traffic_went_through_the_gateway(drift):
    assert not drift.traffic.failures, drift.traffic.failures[:3]
    assert drift.traffic.sent == sum(s.rounds * s.per_round for s in harness.SCENARIOS)


@pytest.mark.parametrize("scenario", SHIFTS, ids=[s.name for s in SHIFTS])
def test_each_shift_is_detected_by_its_metric(drift, scenario):
    windows, row = _detection(drift, scenario)
    before, _ = _unexplained_alerts(drift, scenario.public, list(range(harness.FIRST_RUN_ROUND, harness.SHIFT_ROUND)))
    assert not before                                                            # no alert before the shift
    assert windows is not None, [(r.metric, r.value, r.threshold, r.note) for i in range(harness.SHIFT_ROUND,
                                 scenario.rounds) for r in _rows(drift.runs[i], scenario.public, scenario.metric)]
    # The first window holding shifted traffic is half shifted (windows overlap by a round):
    # with alert_after_runs 2, an alert at the 2nd window means it crossed at once, at the
    # 3rd that the half-shifted window stayed within noise.
    assert windows <= ALERT_AFTER_RUNS + 1, [
        (i, r.value, r.threshold, r.crossed, r.note) for i in range(harness.SHIFT_ROUND, scenario.rounds)
        for r in _rows(drift.runs[i], scenario.public, scenario.metric)]
    TABLE.append([scenario.shift, scenario.metric, f"{row.value:.3g}", f"{row.threshold:.3g}"
                  + (f" (baseline {row.baseline:.3g})" if row.baseline is not None else ""), str(windows)])


def test_silent_model_change_is_an_alerting_event_at_once(drift):
    scenario = next(s for s in harness.SCENARIOS if s.name == "swap")
    events = [(i, e) for i, run in drift.runs.items() for e in run.events if e.public_model == scenario.public]
    first_values = [e for _, e in events if not e.old_value]
    # (no system prompt, no tools: no prompt fingerprint, so no event of that kind)
    assert {e.kind for e in first_values} == {"response_model", "system_fingerprint"}
    first_run = harness.FIRST_RUN_ROUND
    assert all(not e.alerting for e in first_values) and all(i == first_run for i, e in events if not e.old_value)
    changes = {e.kind: (i, e) for i, e in events if e.old_value}
    assert set(changes) == {"response_model", "system_fingerprint"}
    for kind, new in (("response_model", "u-swap-2025-06"), ("system_fingerprint", "fp_new")):
        index, event = changes[kind]
        assert index == harness.SHIFT_ROUND and event.alerting == 1 and event.new_value == new
        assert event.requests_since == harness.PER_ROUND and event.deployment == "mock/u-swap"
        assert event.tenant == ""
    TABLE.append([scenario.shift, "model_events (response_model, system_fingerprint)",
                  f"{changes['response_model'][1].old_value} -> u-swap-2025-06", "any new value", "1"])


def test_stable_stream_raises_no_alert_over_20_windows(drift):
    scenario = next(s for s in harness.SCENARIOS if s.name == "stable")
    windows = [i for i in drift.runs if i < scenario.rounds]
    assert len(windows) >= 20
    rows = [r for i in windows for r in _rows(drift.runs[i], scenario.public)]
    measured = {r.metric for r in rows if r.value is not None}
    assert all("embedded by the monitor" in r.note for r in rows if r.metric == "prompt_embedding_auc")
    assert {"prompt_embedding_auc", "prompt_embedding_mmd", "completion_tokens_psi", "refusal_rate",
            "language_js", "latency_p95_ms", "ttft_p50_ms"} <= measured
    # Latency alerts in windows where the test machine itself stalled are counted apart
    # (the answers were slow for a reason no provider caused: the monitor is right to say
    # so); any other alert fails the test.
    unexplained, excused = _unexplained_alerts(drift, scenario.public, windows)
    crossed = sum(r.crossed for r in rows)
    TABLE.append([scenario.shift, f"all ({len(measured)} measured)", f"{crossed} single crossings",
                  f"{len(unexplained)} alerts in {len(windows)} windows", "-"])
    if excused:
        TABLE.append(["  (test machine stalled)", "latency", f"{len(excused)} alerts", "in stalled windows", "-"])
    rounds, probe = drift.traffic.rounds, drift.traffic.probe
    assert unexplained == [], (unexplained, [(i, f"worst {probe.worst(rounds[i - 1].start, rounds[i].end):.2f}",
                                              f"mean {probe.mean(rounds[i - 1].start, rounds[i].end):.3f}")
                                             for i in windows])


def test_prompt_change_is_an_event_not_drift(drift):
    scenario = next(s for s in harness.SCENARIOS if s.name == "prompt")
    events = [(i, e) for i, run in drift.runs.items() for e in run.events
              if e.public_model == scenario.public and e.kind == "prompt_fingerprint"]
    assert [i for i, _ in events] == [harness.FIRST_RUN_ROUND, harness.SHIFT_ROUND]
    (_, first), (_, change) = events
    assert change.old_value == first.new_value and change.new_value != first.new_value
    assert change.alerting == 0 and change.tenant == "team-d" and change.deployment == ""
    assert _unexplained_alerts(drift, scenario.public, sorted(drift.runs))[0] == []
    # After the change the new fingerprint is a segment of its own, with no baseline yet;
    # the old one's window holds its last round only, compared with its own baseline.
    after = _rows(drift.runs[harness.SHIFT_ROUND], scenario.public)
    assert {r.prompt_fingerprint for r in after} == {first.new_value, change.new_value}
    new = [r for r in after if r.prompt_fingerprint == change.new_value]
    assert new and all(r.n_baseline == 0 and "min_samples" in r.note for r in new)
    later = _rows(drift.runs[harness.SHIFT_ROUND + 1], scenario.public)
    assert {r.prompt_fingerprint for r in later} == {change.new_value}
    TABLE.append([scenario.shift, "model_events (prompt_fingerprint)", "new segment, not drift",
                  "-", "event at once"])


def test_runs_are_fast_and_rows_are_stored(drift, ch):
    stored = ch.command(f"SELECT count() FROM `{drift.database}`.drift_metrics")
    assert stored == sum(len(r.metrics) for r in drift.runs.values())
    # the first run imports scikit-learn, scipy, the language model and embeds a baseline
    assert sorted(drift.run_seconds)[len(drift.run_seconds) // 2] < 5 and max(drift.run_seconds) < 30


def test_print_detection_table(drift, capsys):
    """The table in docs/monitoring.md ("Drift"), from this run."""
    from monitoring.report import render_table
    if not TABLE:
        pytest.skip("no detections recorded (run the whole module)")
    with capsys.disabled():
        print("\n\ndrift detection table (tests/monitoring/test_drift_detection.py)")
        print(render_table(["shift", "metric", "value", "threshold", "windows to detect"], TABLE))
        print(f"traffic: {drift.traffic.sent} requests through the gateway in {drift.traffic_seconds:.1f} s; "
              f"{len(drift.runs)} runs, {sum(drift.run_seconds):.1f} s in all (max {max(drift.run_seconds):.2f} s)")
