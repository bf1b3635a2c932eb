"""From a measured value to a verdict: the threshold it is compared with, crossed or not, and why.

Statistic metrics (AUC, MMD, PSI, JS) cross when `value > threshold`. Change metrics
compare the current value with the baseline's: the limit is the baseline moved by
`max(threshold * |baseline|, min_delta)` in the metric's direction; rate metrics must
also be `min_z` standard errors away (two-proportion z), so a handful of requests more or
less does not cross. Below `min_samples` on either side nothing crosses, whatever the value:
the row still carries the value and says so in its note.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from monitoring.config import METRIC_KINDS, MetricSettings


@dataclass(slots=True)
class Measurement:
    """One metric of one segment, before judging."""

    metric: str
    value: float | None
    baseline: float | None
    n_current: int
    n_baseline: int
    note: str = ""
    z: float | None = None       # rate metrics: the two-proportion z statistic


@dataclass(slots=True)
class Verdict:
    threshold: float
    crossed: bool
    note: str


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def limit_of(settings: MetricSettings, baseline: float) -> tuple[float, float]:
    """(lower, upper) limits of a change metric around its baseline value."""
    allowed = max(settings.threshold * abs(baseline), settings.min_delta)
    return baseline - allowed, baseline + allowed


def judge(m: Measurement, settings: MetricSettings, min_samples: int) -> Verdict:
    notes = [m.note] if m.note else []
    gated = m.n_current < min_samples or m.n_baseline < min_samples
    if gated:
        short = [f"n_current {m.n_current}" if m.n_current < min_samples else "",
                 f"n_baseline {m.n_baseline}" if m.n_baseline < min_samples else ""]
        notes.insert(0, f"{' and '.join(filter(None, short))} < min_samples {min_samples}: not alerting")
    if METRIC_KINDS[m.metric] == "statistic":
        crossed = bool(_finite(m.value) and m.value > settings.threshold)      # type: ignore[operator]
        if crossed and settings.min_z and m.z is not None and math.isfinite(m.z) and m.z < settings.min_z:
            notes.append(f"within sampling noise at these sizes (z {m.z:.1f} < {settings.min_z:g})")
            crossed = False
        return Verdict(settings.threshold, crossed and not gated, "; ".join(notes))
    if not _finite(m.baseline):
        return Verdict(math.nan, False, "; ".join(notes or ["no baseline value"]))
    lower, upper = limit_of(settings, m.baseline)                       # type: ignore[arg-type]
    threshold = lower if settings.direction == "down" else upper
    crossed = False
    if _finite(m.value):
        value = m.value                                                  # type: ignore[assignment]
        crossed = (value > upper if settings.direction == "up" else value < lower if settings.direction == "down"
                   else value > upper or value < lower)
        if crossed and settings.min_z and m.z is not None and math.isfinite(m.z) and abs(m.z) < settings.min_z:
            notes.append(f"change within sampling noise (|z| {abs(m.z):.1f} < {settings.min_z:g})")
            crossed = False
    return Verdict(threshold, crossed and not gated, "; ".join(notes))
