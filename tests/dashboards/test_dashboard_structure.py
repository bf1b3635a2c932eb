"""The committed files are a fresh build; every dashboard is well formed: unique panel
ids, no overlapping panels, every variable a query uses defined, every metric a PromQL
expression names registered by the code (a renamed metric fails here)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from dashboards import build
from dashboards.catalog import dashboards
from dashboards.macros import variables_used

ROOT = Path(__file__).resolve().parents[2]
GRAFANA_BUILTINS = {"__interval", "__rate_interval", "__range", "__range_s", "__all"}
SPECS = dashboards()
COMMITTED = {name: json.loads((ROOT / "dashboards" / "json" / f"{name}.json").read_text()) for name in SPECS}


def test_committed_files_equal_a_fresh_build():
    """dashboards/json, the alert provisioning and the Helm chart's copies."""
    assert build.stale() == [], "run `python -m dashboards.build` and commit the result"
    outputs = build.outputs()
    chart = ROOT / "helm" / "sluice" / "files"
    assert {p.name for p in outputs if chart in p.parents} >= {
        *(f"sluice-{n}.json" for n in SPECS), "prometheus-rules.yaml"}


@pytest.mark.parametrize("name", SPECS)
def test_panel_ids_unique_and_grid_free_of_overlaps(name):
    board = COMMITTED[name]
    assert board["schemaVersion"] >= 41 and board["uid"] == SPECS[name].uid
    panels = board["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for p in panels:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = p["title"]


def _texts(node) -> list[str]:
    """Every string in a JSON tree (queries, datasource refs, variable queries, titles)."""
    if isinstance(node, dict):
        return [t for v in node.values() for t in _texts(v)]
    if isinstance(node, list):
        return [t for v in node for t in _texts(v)]
    return [node] if isinstance(node, str) else []


@pytest.mark.parametrize("name", SPECS)
def test_every_variable_used_is_defined(name):
    board = COMMITTED[name]
    defined = {v["name"] for v in board["templating"]["list"]}
    used = set().union(*(variables_used(t) for t in _texts(board["panels"]) + _texts(board["annotations"])
                         + _texts(board["templating"])))
    assert used - GRAFANA_BUILTINS <= defined, f"undefined: {used - GRAFANA_BUILTINS - defined}"
    # and the segment variables are there on every dashboard
    assert {"tenant", "public_model", "deployment"} <= defined
    assert {"ds_clickhouse", "ds_prometheus"} & defined


def test_every_clickhouse_panel_targets_the_plugin():
    for name, board in COMMITTED.items():
        for p in board["panels"]:
            if p["type"] == "row":
                continue
            assert p["datasource"]["uid"] in ("${ds_clickhouse}", "${ds_prometheus}"), (name, p["title"])
            assert p["targets"], (name, p["title"])
            for t in p["targets"]:
                ds = t.get("datasource", p["datasource"])
                assert ds == p["datasource"], (name, p["title"])
                if ds["type"] == "grafana-clickhouse-datasource":
                    assert t["editorType"] == "sql" and t["format"] in (0, 1, 3), (name, p["title"])
                    assert "$__timeFilter(" in t["rawSql"] or "${trace_id" in t["rawSql"], (name, p["title"])
                else:
                    assert t["expr"], (name, p["title"])


def registered_metric_names(registries) -> set[str]:
    """Exposed sample names of every family the registries would export (even with no sample yet)."""
    names: set[str] = set()
    for registry in registries:
        for family in registry.collect():
            suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
                        "summary": ("_sum", "_count", "_created")}.get(family.type, ("",))
            names |= {family.name + s for s in suffixes}
    return names


def promql_expressions() -> list[str]:
    exprs = [q for spec in SPECS.values() for p in spec.prometheus_panels() for q, _ in p.queries]
    exprs += [v.query for spec in SPECS.values() if spec.datasource == "prometheus" for v in spec.all_variables()]
    rules = yaml.safe_load((ROOT / "dashboards" / "alerts" / "prometheus-rules.yaml").read_text())
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    return exprs


def test_every_metric_named_is_registered_by_the_code(dash_gateway):
    """Names from the registry of a running gateway (and the monitor's own), not a list."""
    from monitoring.metrics import MonitorMetrics
    gw, _ = dash_gateway
    known = registered_metric_names([gw.gateway.telemetry.metrics.registry, MonitorMetrics().registry])
    assert "sluice_requests_total" in known and "sluice_limit_decisions_total" in known
    named = {m for e in promql_expressions() for m in re.findall(r"\b(sluice_[a-z0-9_]+)", e)}
    assert len(named) >= 20
    assert named - known == set()


def test_alert_rules_have_severity_summary_and_runbook():
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).strip().replace(" ", "-")
               for h in re.findall(r"^#+ (.+)$", runbook, re.M)}
    rules = yaml.safe_load((ROOT / "dashboards" / "alerts" / "prometheus-rules.yaml").read_text())
    grafana = yaml.safe_load((ROOT / "dashboards" / "alerts" / "grafana-alerts.yaml").read_text())
    every = [r for g in rules["groups"] for r in g["rules"]] + [r for g in grafana["groups"] for r in g["rules"]]
    assert len(every) >= 16
    for rule in every:
        assert rule["labels"]["severity"] in ("page", "warning"), rule
        assert rule["annotations"]["summary"]
        url = rule["annotations"]["runbook_url"]
        assert url.startswith("https://github.com/sluice-gateway/sluice/blob/main/docs/runbook.md#")
        assert url.split("#", 1)[1] in anchors, f"docs/runbook.md has no heading for {url}"
