"""`sluice report drift`: the latest run's metrics per segment, alert flags first, and recent events.

Reads `drift_metrics` (the rows of the most recent run, `ts = max(ts)`) and `model_events`
(those first seen within `events_since`), and renders plain-text tables.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from monitoring.aggregates import naive_utc
from telemetry.drift_tables import DRIFT_METRICS, MODEL_EVENTS
from monitoring.windows import utc


def _number(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}"


def render_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def drift_report(client, database: str, *, now: datetime, events_since: timedelta = timedelta(days=1),
                 only_alerting: bool = False) -> str:
    latest = client.query(f"SELECT max(ts), count() FROM `{database}`.{DRIFT_METRICS}").result_rows
    if not latest or not latest[0][1]:
        return "no drift runs yet: `sluice monitor run --once` (or monitoring.in_process: true)\n"
    last_ts = latest[0][0]
    rows = client.query(
        f"SELECT public_model, deployment, tenant, prompt_fingerprint, metric, value, baseline, threshold, "
        f"alerting, crossed, n_current, n_baseline, note, window_start, window_end FROM `{database}`.{DRIFT_METRICS} "
        f"WHERE ts = {{ts:DateTime64(3, 'UTC')}} ORDER BY alerting DESC, crossed DESC, public_model, deployment, "
        f"tenant, prompt_fingerprint, metric", parameters={"ts": last_ts}).result_rows
    alerting = sum(1 for r in rows if r[8])
    segments = {tuple(r[:4]) for r in rows}
    out = [f"drift run at {utc(last_ts).isoformat(timespec='seconds')}: window "
           f"{utc(rows[0][13]).isoformat(timespec='seconds')} .. {utc(rows[0][14]).isoformat(timespec='seconds')}, "
           f"{len(segments)} segments, {alerting} alerting", ""]
    table = []
    for r in rows:
        if only_alerting and not r[8]:
            continue
        flag = "ALERT" if r[8] else "crossed" if r[9] else ""
        segment = "/".join(part or "-" for part in r[:4])
        table.append([flag, segment, r[4], _number(r[5]), _number(r[6]), _number(r[7]),
                      f"{r[10]}/{r[11]}", r[12][:80]])
    out.append(render_table(["alert", "segment (model/deployment/tenant/fingerprint)", "metric", "value",
                             "baseline", "threshold", "n cur/base", "note"], table))
    events = client.query(
        f"SELECT first_seen, kind, public_model, deployment, tenant, old_value, new_value, requests_since, alerting "
        f"FROM `{database}`.{MODEL_EVENTS} WHERE first_seen >= {{since:DateTime64(3, 'UTC')}} "
        f"ORDER BY first_seen DESC LIMIT 50", parameters={"since": naive_utc(now - events_since)}).result_rows
    out += ["", f"model events since {utc(naive_utc(now - events_since)).isoformat(timespec='seconds')}:"]
    if events:
        out.append(render_table(
            ["first seen", "kind", "segment (model/deployment/tenant)", "old", "new", "requests", "alert"],
            [[utc(e[0]).isoformat(timespec="seconds"), e[1], "/".join(p or "-" for p in e[2:5]), e[5] or "(first)",
              e[6], str(e[7]), "ALERT" if e[8] else ""] for e in events]))
    else:
        out.append("none")
    return "\n".join(out) + "\n"
