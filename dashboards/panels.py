"""Panels defined once: a small spec per panel, turned into SDK builders here.

A dashboard module lists `ClickHousePanel` / `PrometheusPanel` specs; `dashboards/board.py`
lays them out and builds the Grafana JSON through grafana-foundation-sdk; the renderer and
the tests read the same specs (their SQL, their panel type, the columns that type needs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from grafana_foundation_sdk.builders import barchart, dashboard, piechart, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders.common import StackingConfig
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import DataSourceRef, GridPos

PanelKind = Literal["timeseries", "stat", "table", "barchart", "piechart", "traces"]

CLICKHOUSE_TYPE = "grafana-clickhouse-datasource"
CLICKHOUSE_DS = DataSourceRef(type_val=CLICKHOUSE_TYPE, uid="${ds_clickhouse}")
PROMETHEUS_DS = DataSourceRef(type_val="prometheus", uid="${ds_prometheus}")

# The plugin's `format` (its Format enum) and `queryType` for each panel kind.
_FORMAT = {"timeseries": (0, "timeseries"), "traces": (3, "traces")}
_TABLE_FORMAT = (1, "table")


@dataclass(frozen=True, slots=True)
class ClickHousePanel:
    """One ClickHouse panel. `sql` uses the plugin's macros and the dashboard variables.
    Columns by kind: timeseries `time` first (then a string series column and/or numbers);
    stat numbers; barchart / piechart a string label then numbers; traces the trace panel's
    fields (traceID, spanID, parentSpanID, operationName, serviceName, startTime, duration)."""

    title: str
    kind: PanelKind
    sql: str
    unit: str = ""
    width: int = 12
    height: int = 8
    description: str = ""
    stack: bool = False


@dataclass(frozen=True, slots=True)
class PrometheusPanel:
    """One Prometheus panel: (expression, legend) pairs."""

    title: str
    kind: PanelKind
    queries: tuple[tuple[str, str], ...]
    unit: str = ""
    width: int = 8
    height: int = 8
    description: str = ""
    stack: bool = False


Panel = ClickHousePanel | PrometheusPanel


class _JsonDict(dict):
    """A plain mapping the SDK's JSON encoder writes as is (it calls `to_json()`)."""

    def to_json(self) -> dict[str, Any]:
        return dict(self)


class ClickHouseQuery(cogbuilder.Builder[cogvariants.Dataquery]):
    """A grafana-clickhouse-datasource target (the SDK has no builder for this plugin)."""

    def __init__(self, sql: str, kind: PanelKind, ref_id: str = "A") -> None:
        fmt, query_type = _FORMAT.get(kind, _TABLE_FORMAT)
        self._query = _JsonDict(
            datasource=CLICKHOUSE_DS.to_json(), editorType="sql", format=fmt, queryType=query_type,
            rawSql=sql.strip(), refId=ref_id)

    def build(self) -> Any:
        return self._query


def _builder(kind: PanelKind) -> Any:
    match kind:
        case "timeseries":
            return timeseries.Panel()
        case "stat":
            return stat.Panel()
        case "table":
            return table.Panel()
        case "barchart":
            return barchart.Panel().x_tick_label_rotation(-30)
        case "piechart":
            return piechart.Panel()
        case "traces":
            return dashboard.Panel().type("traces")
    raise ValueError(kind)


def build_panel(spec: Panel, panel_id: int, x: int, y: int) -> Any:
    """The SDK builder of one panel at grid position (x, y)."""
    b = _builder(spec.kind).id(panel_id).title(spec.title)
    b = b.grid_pos(dashboard_grid(x, y, spec.width, spec.height))
    if spec.description:
        b = b.description(spec.description)
    if isinstance(spec, ClickHousePanel):
        b = b.datasource(CLICKHOUSE_DS).with_target(ClickHouseQuery(spec.sql, spec.kind))
    else:
        b = b.datasource(PROMETHEUS_DS)
        for i, (expr, legend) in enumerate(spec.queries):
            q = prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(chr(ord("A") + i))
            b = b.with_target(q.instant() if spec.kind in ("stat", "table", "barchart", "piechart") else q.range())
    if spec.unit and spec.kind != "traces":
        b = b.unit(spec.unit)
    if spec.stack and spec.kind == "timeseries":
        b = b.stacking(StackingConfig().mode(common.StackingMode.NORMAL)).fill_opacity(30)
    return b


def dashboard_grid(x: int, y: int, w: int, h: int) -> GridPos:
    return GridPos(h=h, w=w, x=x, y=y)
