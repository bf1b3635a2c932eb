"""A dashboard = a title, rows of panel specs and the variables its queries use.

`DashboardSpec.to_json()` lays the rows out on Grafana's 24-column grid (left to right,
wrapping; each row starts under the tallest panel of the one before), numbers the panels,
adds the variables and builds the JSON through grafana-foundation-sdk. The variables:

- `ds_clickhouse` / `ds_prometheus`: datasource pickers, so the JSON imports anywhere;
- `database`: the ClickHouse database of Sluice's tables (`telemetry.database`, "sluice");
- `tenant`, `public_model`, `deployment`: multi-value with "All", read from the per-minute
  rollup (ClickHouse dashboards) or from label values (the Prometheus one). ClickHouse
  queries filter with `$__conditionalAll(col IN (${var:singlequote}), $var)`: "All" costs
  no filter at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DashboardCursorSync, VariableOption, VariableRefresh, VariableSort

from dashboards.panels import (
    CLICKHOUSE_DS, CLICKHOUSE_TYPE, PROMETHEUS_DS, ClickHousePanel, Panel, PrometheusPanel, _JsonDict,
    build_panel, dashboard_grid,
)

SEGMENTS = ("tenant", "public_model", "deployment")
GRID_COLUMNS = 24


def segment_filter(*dims: str) -> str:
    """The WHERE terms of the tenant / public model / deployment variables."""
    return " AND ".join(f"$__conditionalAll({d} IN (${{{d}:singlequote}}), ${d})" for d in (dims or SEGMENTS))


@dataclass(frozen=True, slots=True)
class Annotation:
    """A ClickHouse annotation query (time, text, tags columns)."""

    name: str
    sql: str
    color: str = "orange"


@dataclass(frozen=True, slots=True)
class Variable:
    """A dashboard variable beyond the datasource pickers and `database`."""

    name: str
    label: str
    query: str                       # ClickHouse SQL, or a Prometheus label_values(...) query
    multi: bool = True
    include_all: bool = True
    textbox: bool = False            # a free text box (e.g. a trace id); `query` is its default


@dataclass(slots=True)
class DashboardSpec:
    uid: str
    title: str
    description: str
    tags: tuple[str, ...]
    rows: list[tuple[str, list[Panel]]]
    datasource: str = "clickhouse"               # "clickhouse" | "prometheus": where variables come from
    time_from: str = "now-24h"
    refresh: str = "1m"
    variables: list[Variable] = field(default_factory=list)
    annotations: list[Annotation] = field(default_factory=list)

    def panels(self) -> list[Panel]:
        return [p for _, panels in self.rows for p in panels]

    def clickhouse_panels(self) -> list[ClickHousePanel]:
        return [p for p in self.panels() if isinstance(p, ClickHousePanel)]

    def prometheus_panels(self) -> list[PrometheusPanel]:
        return [p for p in self.panels() if isinstance(p, PrometheusPanel)]

    def all_variables(self) -> list[Variable]:
        return [*self._segment_variables(), *self.variables]

    def _segment_variables(self) -> list[Variable]:
        if self.datasource == "prometheus":
            sources = {"tenant": "sluice_requests_total", "public_model": "sluice_requests_total",
                       "deployment": "sluice_breaker_state"}
            return [Variable(d, d.replace("_", " "), f"label_values({sources[d]}, {d})") for d in SEGMENTS]
        return [Variable(d, d.replace("_", " "),
                         f"SELECT DISTINCT {d} FROM ${{database}}.llm_requests_1m "
                         f"WHERE $__timeFilter(minute) ORDER BY {d}") for d in SEGMENTS]

    def to_json(self) -> dict[str, Any]:
        b = (dashboard.Dashboard(self.title).uid(self.uid).description(self.description)
             .tags(list(self.tags)).time(self.time_from, "now").refresh(self.refresh).timezone("utc")
             .tooltip(DashboardCursorSync.CROSSHAIR).editable())
        uses_ch = self.datasource == "clickhouse" or bool(self.clickhouse_panels()) or bool(self.annotations)
        uses_prom = self.datasource == "prometheus" or bool(self.prometheus_panels())
        if uses_prom:
            b = b.with_variable(dashboard.DatasourceVariable("ds_prometheus").label("Prometheus").type("prometheus"))
        if uses_ch:
            b = (b.with_variable(dashboard.DatasourceVariable("ds_clickhouse").label("ClickHouse")
                                 .type(CLICKHOUSE_TYPE))
                 .with_variable(dashboard.TextBoxVariable("database").label("database")
                                .default_value("sluice")
                                .current(VariableOption(text="sluice", value="sluice"))))
        for v in self.all_variables():
            b = b.with_variable(self._variable(v))
        for a in self.annotations:
            b = b.annotation(dashboard.AnnotationQuery().name(a.name).datasource(CLICKHOUSE_DS)
                             .enable(True).icon_color(a.color)
                             .target(_Target(sql=a.sql)))
        panel_id = 1
        y = 0
        for title, panels in self.rows:
            b = b.with_row(dashboard.Row(title).id(panel_id).grid_pos(dashboard_grid(0, y, GRID_COLUMNS, 1)))
            panel_id += 1
            y += 1
            x, line_height = 0, 0
            for spec in panels:
                if x + spec.width > GRID_COLUMNS:
                    x, y, line_height = 0, y + line_height, 0
                b = b.with_panel(build_panel(spec, panel_id, x, y))
                panel_id += 1
                x += spec.width
                line_height = max(line_height, spec.height)
            y += line_height
        return json.loads(json.dumps(b.build(), cls=JSONEncoder))

    def _variable(self, v: Variable) -> Any:
        if v.textbox:
            return (dashboard.TextBoxVariable(v.name).label(v.label).default_value(v.query)
                    .current(VariableOption(text=v.query, value=v.query)))
        ds = PROMETHEUS_DS if self.datasource == "prometheus" else CLICKHOUSE_DS
        q = (dashboard.QueryVariable(v.name).label(v.label).datasource(ds).query(v.query)
             .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).sort(VariableSort.ALPHABETICAL_ASC)
             .multi(v.multi).include_all(v.include_all))
        if v.include_all:
            q = q.current(VariableOption(text="All", value="$__all"))
            if self.datasource == "prometheus":
                q = q.all_value(".*")           # label matchers: `=~"$var"`
        return q


class _Target:
    """The builder of a ClickHouse annotation target (plain query JSON)."""

    def __init__(self, sql: str) -> None:
        self._query = _JsonDict(datasource=CLICKHOUSE_DS.to_json(), editorType="sql", format=1,
                                queryType="table", rawSql=sql.strip(), refId="Anno")

    def build(self) -> Any:
        return self._query

