"""Every ClickHouse panel as a PNG, without Grafana: `sluice dashboards render`.

Each panel's committed SQL goes through the same expander the tests use
(dashboards/macros.py: the plugin's macros, every variable at "All"), runs on the traces'
ClickHouse, and is drawn with matplotlib the way its Grafana panel type would show it:
time series as lines, stats as numbers, bar and pie charts, tables as text, a trace as a
span waterfall. `index.html` beside the PNGs shows them by dashboard. A person can look at
it; CI can check that every panel ran and drew something.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from dashboards.catalog import dashboards
from dashboards.macros import ALL, QueryContext, expand
from dashboards.panels import ClickHousePanel

# Grafana picks the interval from the range and the panel's width (~maxDataPoints);
# about 120 points per panel here.
POINTS = 120


@dataclass(frozen=True, slots=True)
class Rendered:
    dashboard: str
    title: str
    path: Path
    rows: int
    error: str = ""
    has_data: bool = False       # some value other than 0 / NULL (a stat over nothing is one row of 0)


def context(database: str, since: timedelta, now: datetime | None = None,
            variables: dict[str, Any] | None = None) -> QueryContext:
    """The dashboard state the renderer (and the tests) expand queries for."""
    to = now or datetime.now(timezone.utc)
    values: dict[str, Any] = {"database": database, "tenant": ALL, "public_model": ALL, "deployment": ALL,
                              "metric": ALL, "trace_id": ""}
    values.update(variables or {})
    interval = max(int(since.total_seconds() // POINTS), 1)
    return QueryContext(time_from=to - since, time_to=to, interval_s=interval, variables=values)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60]


def render(client: Any, database: str, out: Path, *, since: timedelta, now: datetime | None = None,
           only: Sequence[str] = ()) -> list[Rendered]:
    """Render every ClickHouse panel (of the dashboards named in `only`, default all) to
    `out/<dashboard>/<panel>.png` and write `out/index.html`. Blocking (queries and drawing)."""
    import matplotlib
    matplotlib.use("Agg")
    ctx = context(database, since, now)
    done: list[Rendered] = []
    for name, spec in dashboards().items():
        if only and name not in only:
            continue
        panels = spec.clickhouse_panels()
        if not panels:
            continue
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for panel in panels:
            path = folder / f"{_slug(panel.title)}.png"
            try:
                result = client.query(expand(panel.sql, ctx))
                columns, rows = list(result.column_names), list(result.result_rows)
                error = ""
            except Exception as exc:  # noqa: BLE001 - one broken panel must not stop the others
                columns, rows, error = [], [], f"{type(exc).__name__}: {str(exc)[:300]}"
            draw(panel, columns, rows, path, error=error, subtitle=f"{spec.title} · last {since}",
                 time_range=(ctx.time_from, ctx.time_to))
            done.append(Rendered(name, panel.title, path, len(rows), error, _has_data(rows)))
    write_index(out, done, since)
    return done


def draw(panel: ClickHousePanel, columns: Sequence[str], rows: Sequence[Sequence[Any]], path: Path, *,
         error: str = "", subtitle: str = "", time_range: tuple[datetime, datetime] | None = None) -> None:
    """One panel's PNG."""
    import matplotlib.pyplot as plt
    size = (max(panel.width, 6) * 0.5, max(panel.height, 4) * 0.45)
    fig, ax = plt.subplots(figsize=size, dpi=100)
    ax.set_title(panel.title, fontsize=10, loc="left")
    try:
        if error:
            _message(ax, f"query failed\n{error[:160]}", color="#c0392b")
        elif not rows:
            _message(ax, "No data")
        else:
            _DRAW[panel.kind](ax, list(columns), list(rows), panel)
            if panel.kind == "timeseries" and time_range:
                ax.set_xlim(*(t.replace(tzinfo=None) for t in time_range))     # the dashboard's range, in UTC
        if subtitle:
            fig.text(0.01, 0.01, subtitle, fontsize=6, color="#777777")
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


def _has_data(rows: Sequence[Sequence[Any]]) -> bool:
    return any(_number(v) or isinstance(v, str) and v for row in rows for v in row)


def _message(ax: Any, text: str, color: str = "#777777") -> None:
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=9, color=color, wrap=True)


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        f = float(v)
        return None if math.isnan(f) or math.isinf(f) else f
    return None


def _is_numeric(rows: Sequence[Sequence[Any]], i: int) -> bool:
    seen = [r[i] for r in rows if r[i] is not None]
    return bool(seen) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in seen)


def _timeseries(ax: Any, columns: list[str], rows: list[Sequence[Any]], panel: ClickHousePanel) -> None:
    labels = [i for i in range(1, len(columns)) if not _is_numeric(rows, i)]
    values = [i for i in range(1, len(columns)) if _is_numeric(rows, i)]
    series: dict[str, tuple[list[datetime], list[float]]] = {}
    for r in rows:
        prefix = " ".join(str(r[i]) for i in labels)
        for i in values:
            key = f"{prefix} {columns[i]}".strip() if len(values) > 1 or not prefix else prefix
            xs, ys = series.setdefault(key, ([], []))
            v = _number(r[i])
            xs.append(r[0])
            ys.append(math.nan if v is None else v)
    for key, (xs, ys) in sorted(series.items())[:12]:
        ax.plot(xs, ys, label=key or columns[values[0]], linewidth=1.2, marker="." if len(xs) < 30 else None,
                linestyle="--" if key.endswith("threshold") else "-")
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=7)
    if panel.unit:
        ax.set_ylabel(panel.unit, fontsize=7)
    ax.legend(fontsize=6, loc="upper left")
    for label in ax.get_xticklabels():
        label.set_rotation(20)


def _stat(ax: Any, columns: list[str], rows: list[Sequence[Any]], panel: ClickHousePanel) -> None:
    ax.axis("off")
    row = rows[0]
    cells = [(c, row[i]) for i, c in enumerate(columns)]
    for k, (name, value) in enumerate(cells):
        x = (k + 0.5) / len(cells)
        ax.text(x, 0.55, _format(value, panel.unit), ha="center", va="center", fontsize=20, color="#1f77b4")
        ax.text(x, 0.15, name, ha="center", va="center", fontsize=8, color="#555555")


def _format(value: Any, unit: str) -> str:
    v = _number(value)
    if v is None:
        return "—" if value is None or isinstance(value, float) else str(value)
    if unit == "percentunit":
        return f"{v * 100:.2f}%"
    if unit == "currencyUSD":
        return f"${v:,.4f}" if abs(v) < 100 else f"${v:,.0f}"
    if unit == "ms":
        return f"{v:,.1f} ms"
    return f"{v:,.0f}" if float(v).is_integer() else f"{v:,.3g}"


def _bars(ax: Any, columns: list[str], rows: list[Sequence[Any]], panel: ClickHousePanel) -> None:
    values = [i for i in range(1, len(columns)) if _is_numeric(rows, i)]
    names = [str(r[0]) or "(empty)" for r in rows[:20]]
    width = 0.8 / max(len(values), 1)
    for k, i in enumerate(values):
        xs = [j + k * width for j in range(len(names))]
        ax.bar(xs, [_number(r[i]) or 0.0 for r in rows[:20]], width=width, label=columns[i])
    ax.set_xticks([j + width * (len(values) - 1) / 2 for j in range(len(names))])
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
    ax.tick_params(labelsize=7)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=6)


def _pie(ax: Any, columns: list[str], rows: list[Sequence[Any]], panel: ClickHousePanel) -> None:
    sizes = [_number(r[1]) or 0.0 for r in rows[:10]]
    if not any(sizes):
        _message(ax, "No data")
        return
    ax.pie(sizes, labels=[str(r[0]) for r in rows[:10]], autopct="%1.0f%%", textprops={"fontsize": 7})


def _table(ax: Any, columns: list[str], rows: list[Sequence[Any]], panel: ClickHousePanel) -> None:
    ax.axis("off")
    shown = rows[:12]

    def cell(v: Any) -> str:
        if isinstance(v, datetime):
            return v.strftime("%m-%d %H:%M:%S")
        n = _number(v)
        text = (f"{n:.4g}" if n is not None and not float(n).is_integer() else str(v))
        return text if len(text) <= 28 else text[:27] + "…"
    table = ax.table(cellText=[[cell(v) for v in r] for r in shown], colLabels=columns, loc="upper center",
                     cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(6)
    table.scale(1, 1.1)


def _trace(ax: Any, columns: list[str], rows: list[Sequence[Any]], panel: ClickHousePanel) -> None:
    col = {c: i for i, c in enumerate(columns)}
    spans = sorted(rows, key=lambda r: r[col["startTime"]])[:40]
    t0 = spans[0][col["startTime"]]
    for y, r in enumerate(spans):
        start_ms = (r[col["startTime"]] - t0).total_seconds() * 1000
        color = "#c0392b" if r[col["statusCode"]] == 2 else "#1f77b4"
        ax.barh(y, max(float(r[col["duration"]]), 0.01), left=start_ms, color=color)
        ax.text(start_ms, y, f" {r[col['operationName']]} ({float(r[col['duration']]):.1f} ms)", va="center",
                fontsize=6)
    ax.invert_yaxis()
    ax.set_yticks([])
    ax.set_xlabel(f"ms since start of trace {spans[0][col['traceID']][:16]}…", fontsize=7)
    ax.tick_params(labelsize=7)


_DRAW = {"timeseries": _timeseries, "stat": _stat, "barchart": _bars, "piechart": _pie, "table": _table,
         "traces": _trace}


def write_index(out: Path, rendered: list[Rendered], since: timedelta) -> Path:
    """`out/index.html`: every PNG, by dashboard, with its row count or error."""
    parts = [f"<!doctype html><meta charset='utf-8'><title>Sluice dashboards</title>"
             f"<style>body{{font-family:sans-serif;margin:1em}} figure{{display:inline-block;margin:.4em;"
             f"vertical-align:top}} img{{max-width:600px;border:1px solid #ddd}} .err{{color:#c0392b}}</style>"
             f"<h1>Sluice dashboards</h1><p>Every ClickHouse panel over the last {html.escape(str(since))}, "
             f"rendered {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.</p>"]
    current = None
    for r in rendered:
        if r.dashboard != current:
            current = r.dashboard
            parts.append(f"<h2>{html.escape(r.dashboard)}</h2>")
        note = (f"<span class='err'>{html.escape(r.error)}</span>" if r.error else f"{r.rows} rows")
        rel = r.path.relative_to(out).as_posix()
        parts.append(f"<figure><img src='{html.escape(rel)}' alt='{html.escape(r.title)}'>"
                     f"<figcaption>{html.escape(r.title)} · {note}</figcaption></figure>")
    index = out / "index.html"
    index.write_text("\n".join(parts) + "\n")
    return index
