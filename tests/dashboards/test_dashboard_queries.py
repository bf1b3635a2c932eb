"""Every ClickHouse query the dashboards and alert rules send, expanded as the plugin
expands it, runs on chDB against the real schema filled by real traffic, and returns the
columns its panel type needs; over an empty database, none fails."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from dashboards import grafana_alerts
from dashboards.catalog import dashboards
from dashboards.macros import ALL, QueryContext, expand
from dashboards.panels import ClickHousePanel
from dashboards.render import context

SPECS = dashboards()
PANELS = [(name, p) for name, spec in SPECS.items() for p in spec.clickhouse_panels()]
TRACE_FIELDS = {"traceID", "spanID", "parentSpanID", "operationName", "serviceName", "startTime", "duration"}


def _ids(item) -> str:
    return f"{item[0]}:{item[1].title}"


def _numeric(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def run(ch, sql: str) -> tuple[list[str], list]:
    """The result's column names (from DESCRIBE: chDB gives none for an empty result) and rows."""
    columns = [row[0] for row in ch.query(f"DESCRIBE ({sql})").result_rows]
    return columns, list(ch.query(sql).result_rows)


def check_shape(panel: ClickHousePanel, columns: list[str], rows: list) -> None:
    """The columns (and, with rows, the value types) the panel's Grafana type reads."""
    assert columns, panel.title
    assert len(set(columns)) == len(columns), f"{panel.title}: duplicate column names {columns}"
    if panel.kind == "timeseries":
        assert columns[0] == "time", f"{panel.title}: time series need `time` first, got {columns}"
        for row in rows:
            assert isinstance(row[0], datetime)
            assert any(_numeric(v) for v in row[1:]) or all(v is None for v in row[1:])
    elif panel.kind == "traces":
        assert TRACE_FIELDS <= set(columns), f"{panel.title}: missing {TRACE_FIELDS - set(columns)}"
    elif panel.kind in ("barchart", "piechart"):
        assert len(columns) >= 2
        for row in rows:
            assert isinstance(row[0], str), f"{panel.title}: the first column labels the bars"
            assert all(_numeric(v) for v in row[1:]), f"{panel.title}: {row}"
    elif panel.kind == "stat":
        assert len(rows) <= 1
        for row in rows:
            assert all(_numeric(v) or v is None for v in row), f"{panel.title}: {row}"


def test_at_least_30_clickhouse_panels():
    assert len(PANELS) >= 30


@pytest.mark.parametrize("item", PANELS, ids=_ids)
def test_panel_runs_on_traffic(item, traffic, ch):
    name, panel = item
    columns, rows = run(ch, expand(panel.sql, context(traffic.database, timedelta(hours=1))))
    check_shape(panel, columns, rows)


@pytest.mark.parametrize("item", PANELS, ids=_ids)
def test_panel_runs_on_empty_database(item, empty_database, ch):
    name, panel = item
    columns, rows = run(ch, expand(panel.sql, context(empty_database, timedelta(hours=24))))
    check_shape(panel, columns, rows)


def _value(ch, panel_title: str, database: str, **variables) -> list:
    panel = next(p for _, p in PANELS if p.title == panel_title)
    return ch.query(expand(panel.sql, context(database, timedelta(hours=1), variables=variables))).result_rows


def test_panels_count_the_traffic(traffic, ch):
    """The figures are the traffic's, through the rollups: every request, each tenant's
    share, the fallback, the cache hits, the guardrail outcomes, the refused requests."""
    db = traffic.database
    assert _value(ch, "Requests", db) == [(traffic.requests,)]
    team_a = int(ch.command(f"SELECT count() FROM `{db}`.llm_requests WHERE tenant = 'team-a'"))
    assert 0 < team_a < traffic.requests
    assert _value(ch, "Requests", db, tenant=["team-a"]) == [(team_a,)]
    assert _value(ch, "Requests", db, tenant=["team-a", "team-b"]) == [(traffic.requests,)]
    assert _value(ch, "Requests", db, tenant=["nobody"]) == [(0,)]
    assert _value(ch, "Semantic hits", db) == [(0,)]
    [(hit_rate,)] = _value(ch, "Hit rate", db)
    assert hit_rate == pytest.approx(2 / 3)                          # 1 miss then 2 exact hits
    statuses = dict(_value(ch, "Status codes", db))
    assert statuses["503"] >= 1 and statuses["429"] >= 1 and statuses["502"] >= 1
    limited = {row[1] for row in _value(ch, "Limits hit", db)}
    assert limited == {"rate"}
    actions = {row[0]: row[1:] for row in _value(ch, "Blocks, redactions and masks by guardrail", db)}
    assert actions["injection (input)"][0] >= 1                                       # blocks
    [(fail_closed,)] = _value(ch, "Fail-closed refusals (503)", db)
    assert fail_closed >= 1
    [(cost,)] = _value(ch, "Cost", db)
    assert cost > 0
    failing = _value(ch, "Top failing deployments", db)
    assert failing[0][:6] == ("primary/fail-500", "fail-500", 2, 2, 1.0, "http_500")   # after-500 and broken
    assert {row[0]: row[3] for row in failing}["primary/m1"] == 0


def test_trace_panel_shows_a_whole_trace(traffic, ch):
    db = traffic.database
    trace_id = ch.command(f"SELECT argMax(trace_id, timestamp) FROM `{db}`.llm_requests "
                          f"WHERE public_model = 'after-500'")
    result = ch.query(expand(next(p for _, p in PANELS if p.kind == "traces").sql,
                             context(db, timedelta(hours=1), variables={"trace_id": trace_id})))
    spans = [dict(zip(result.column_names, r)) for r in result.result_rows]
    assert {s["traceID"] for s in spans} == {trace_id}
    assert len(spans) >= 3                                    # the server span and both attempts
    roots = [s for s in spans if s["parentSpanID"] == ""]
    assert len(roots) == 1
    assert any(s["statusCode"] == 2 for s in spans)           # the failed attempt
    # no trace id given: the newest trace in range
    default = ch.query(expand(next(p for _, p in PANELS if p.kind == "traces").sql, context(db, timedelta(hours=1))))
    assert default.result_rows


def test_quality_panels_read_the_monitor_tables(traffic, ch):
    db = traffic.database
    assert _value(ch, "Segments alerting", db) == [(1,)]
    series = {row[1] for row in _value(ch, "Refusals, empty answers, JSON validity", db)}
    assert {"refusal_rate value", "refusal_rate threshold", "json_valid_rate value"} <= series
    events = _value(ch, "Upstream model and fingerprint changes", db)
    assert [e[4] for e in events] == ["system_fingerprint", "response_model"]
    scores = _value(ch, "Scores by prompt fingerprint", db)
    # the last hour only: the day-before rows are out of range
    assert [(r[0], r[2], r[4]) for r in scores] == [("grounding", "gpt", 25), ("grounding", "claude", 25)]
    assert scores[0][5] == pytest.approx(0.5) and scores[0][6] == 1.0                     # worst first
    assert dict(_value(ch, "Evaluation labels", db)) == {"grounding supported": 25, "grounding unsupported": 25}
    [(per_request, rating)] = _value(ch, "Feedback rate", db)
    assert per_request == pytest.approx(4 / traffic.requests) and rating == pytest.approx(0.75)
    by_model = {r[0]: r[2:] for r in _value(ch, "Ratings and implicit signals by model", db)}
    assert by_model == {"gpt": (3, 0.6667, 1, 0, 0), "claude": (1, 1.0, 0, 1, 0)}     # rounded to 4 places


def test_variable_and_annotation_queries(traffic, ch):
    ctx = context(traffic.database, timedelta(hours=1))
    for spec in SPECS.values():
        if spec.datasource != "clickhouse":
            continue
        for v in spec.all_variables():
            if v.textbox:
                continue
            rows = ch.query(expand(v.query, ctx)).result_rows
            assert rows and all(len(r) == 1 for r in rows), v.name
        for a in spec.annotations:
            columns, rows = run(ch, expand(a.sql, ctx))
            assert columns == ["time", "text", "tags"]
            assert len(rows) == 2


@pytest.mark.parametrize("alert", grafana_alerts.ALERTS, ids=lambda a: a.uid)
def test_grafana_alert_queries(alert, traffic, ch, empty_database):
    """Table format: string columns (the alert's labels), then exactly one number."""
    now = datetime.now(timezone.utc)
    for database in (traffic.database, empty_database):
        ctx = QueryContext(now - timedelta(seconds=alert.range_s), now, 60, {"database": database})
        columns, rows = run(ch, expand(alert.sql, ctx))
        assert columns
        for row in rows:
            assert all(isinstance(v, str) for v in row[:-1]) and _numeric(row[-1]), (alert.uid, columns, row)
    ctx = QueryContext(now - timedelta(seconds=alert.range_s), now, 60, {"database": traffic.database})
    fired = [r for r in ch.query(expand(alert.sql, ctx)).result_rows if r[-1] > alert.above]
    expected = {"sluice-drift-alerting": 1, "sluice-upstream-model-change": 1, "sluice-quality-drop": 1,
                "sluice-evaluator-score-drop": 1, "sluice-cost-spike": 0}[alert.uid]
    assert len(fired) == expected, (alert.uid, fired)


def test_all_selection_costs_no_filter():
    sql = "WHERE $__conditionalAll(tenant IN (${tenant:singlequote}), $tenant)"
    now = datetime.now(timezone.utc)
    ctx = QueryContext(now, now, 60, {"tenant": ALL})
    assert expand(sql, ctx) == "WHERE 1=1"
    ctx = QueryContext(now, now, 60, {"tenant": ["a", "o'b"]})
    assert expand(sql, ctx) == "WHERE tenant IN ('a','o\\'b')"


def test_a_renamed_column_fails_its_panels(ch):
    """Columns are checked by running every panel on the real schema: a column renamed in a
    migration makes the panels that read it fail (here: the rollup's request count)."""
    from telemetry.schema import migrate
    database = "dash_renamed"
    migrate(ch, database)
    try:
        ch.command(f"ALTER TABLE `{database}`.llm_requests_1m RENAME COLUMN requests TO request_count")
        ctx = context(database, timedelta(hours=1))
        broken = []
        for _, panel in PANELS:
            try:
                ch.query(expand(panel.sql, ctx))
            except Exception as exc:  # noqa: BLE001 - clickhouse-connect's DatabaseError
                assert "requests" in str(exc)
                broken.append(panel.title)
        assert "Requests" in broken and "Cost by tenant" not in broken and len(broken) >= 15
    finally:
        ch.command(f"DROP DATABASE IF EXISTS `{database}`")
