"""Windows: the current window of a run and the baseline it is compared with.

current  = [now - window_s, now)
baseline = [now - window_s - baseline_s, now - window_s), or a pinned range of the segment
           (`drift_baselines`, set by `sluice monitor baseline set`): the most specific pin
           matching the segment wins, the newest among equals.
The windows of consecutive runs overlap (interval_s < window_s): that is intended, and the
reason `alert_after_runs` counts runs, not disjoint windows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from monitoring.config import MonitoringConfig
from monitoring.segments import Segment, matches, specificity
from telemetry.drift_tables import BASELINE_COLUMNS, DRIFT_BASELINES


@dataclass(frozen=True, slots=True)
class Range:
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class Pin:
    pattern: Segment
    range: Range
    pinned_at: datetime


def utc(value: datetime) -> datetime:
    """ClickHouse hands DateTime64(3, 'UTC') back naive: make every time aware UTC."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def current_window(cfg: MonitoringConfig, now: datetime) -> Range:
    return Range(now - timedelta(seconds=cfg.window_s), now)


def default_baseline(cfg: MonitoringConfig, now: datetime) -> Range:
    end = now - timedelta(seconds=cfg.window_s)
    return Range(end - timedelta(seconds=cfg.baseline_s), end)


def load_pins(client, database: str) -> list[Pin]:
    """The active pinned baselines (the latest row per pattern)."""
    rows = client.query(
        f"SELECT public_model, deployment, tenant, prompt_fingerprint, baseline_start, baseline_end, pinned_at "
        f"FROM `{database}`.{DRIFT_BASELINES} FINAL WHERE active = 1").result_rows
    return [Pin(Segment(*row[:4]), Range(utc(row[4]), utc(row[5])), utc(row[6])) for row in rows]


def baseline_for(segment: Segment, pins: list[Pin], default: Range) -> tuple[Range, bool]:
    """(the segment's baseline range, pinned?)."""
    candidates = [pin for pin in pins if matches(pin.pattern, segment)]
    if not candidates:
        return default, False
    best = max(candidates, key=lambda pin: (specificity(pin.pattern), pin.pinned_at))
    return best.range, True


def pin_baseline(client, database: str, pattern: Segment, window: Range, *, now: datetime,
                 note: str = "", active: bool = True) -> None:
    """Pin `window` as the baseline of every segment matching `pattern` (active=False: unpin)."""
    client.insert(f"{database}.{DRIFT_BASELINES}",
                  [[now, *pattern, window.start, window.end, int(active), note]],
                  column_names=list(BASELINE_COLUMNS))
