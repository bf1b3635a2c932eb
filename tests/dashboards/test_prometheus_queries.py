"""Every PromQL expression (panels, variables, alert rules) evaluated by a real Prometheus
scraping a running gateway under traffic; and the rules through promtool."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.dashboards.conftest import send_traffic
from tests.dashboards.test_dashboard_structure import promql_expressions
from tests.gateway_server import free_port

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "dashboards" / "alerts" / "prometheus-rules.yaml"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
needs_prometheus = pytest.mark.skipif(PROMETHEUS is None or PROMTOOL is None,
                                      reason="prometheus/promtool not installed (make test installs them)")


def grafana_to_promql(expr: str) -> str:
    """What Grafana sends for these dashboards with every variable at "All" (`.*`)."""
    expr = expr.replace("$__rate_interval", "10s").replace("$__interval", "2s")
    return re.sub(r"\$\{?(tenant|public_model|deployment)\}?", ".*", expr)


@pytest.fixture(scope="module")
def prometheus(dash_gateway, tmp_path_factory) -> Iterator[str]:
    gw, _ = dash_gateway
    work = tmp_path_factory.mktemp("prometheus")
    target = gw.url.removeprefix("http://")
    (work / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"rule_files:\n  - {RULES}\n"
        f"scrape_configs:\n  - job_name: sluice\n    static_configs:\n      - targets: ['{target}']\n")
    port = free_port()
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={work / 'prometheus.yml'}",
                             f"--web.listen-address=127.0.0.1:{port}", f"--storage.tsdb.path={work / 'data'}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError("prometheus did not become ready")
        # traffic across several scrapes, so every rate() sees at least two samples of each counter
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                send_traffic(gw.url)
                time.sleep(0.3)
        thread = threading.Thread(target=load, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            up = httpx.get(f"{url}/api/v1/query",
                           params={"query": "count_over_time(up{job='sluice'}[1m])"}).json()["data"]["result"]
            if up and float(up[0]["value"][1]) >= 6:
                break
            time.sleep(0.5)
        stop.set()
        thread.join(timeout=30)
        time.sleep(1.5)                                    # one more scrape after the last request
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _query(url: str, expr: str) -> list:
    body = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert body["status"] == "success", (expr, body)
    return body["data"]["result"]


def _selectors(expr: str) -> list[str]:
    return [m.group(0) for m in re.finditer(r"\bsluice_[a-z0-9_]+(\{[^}]*\})?", expr)]


@needs_prometheus
@pytest.mark.parametrize("expr", promql_expressions())
def test_expression_evaluates_on_real_scrapes(expr, prometheus):
    """It parses and evaluates; when every series it selects exists, it returns series."""
    if expr.startswith("label_values("):
        metric, label = re.fullmatch(r"label_values\((\w+), (\w+)\)", expr).groups()
        values = httpx.get(f"{prometheus}/api/v1/label/{label}/values", params={"match[]": metric}).json()["data"]
        assert values, expr
        return
    promql = grafana_to_promql(expr)
    result = _query(prometheus, promql)
    rule = expr in _rule_exprs()
    present = all(_query(prometheus, f"count({s})") for s in _selectors(promql))
    if present and not rule:                       # a healthy gateway keeps rules quiet: promtool tests them
        assert result, f"no series for {promql}"


def _rule_exprs() -> set[str]:
    import yaml
    rules = yaml.safe_load(RULES.read_text())
    return {r["expr"] for g in rules["groups"] for r in g["rules"]}


@needs_prometheus
def test_core_series_exist_under_traffic(prometheus):
    """The selectors above are not vacuous: the gateway's main series are scraped."""
    for selector in ("sluice_requests_total", "sluice_request_duration_seconds_bucket",
                     "sluice_time_to_first_token_seconds_bucket", "sluice_fallbacks_total",
                     'sluice_request_errors_total{error_type="guardrail_unavailable"}',
                     'sluice_limit_decisions_total{decision="rate"}', "sluice_budget_usd",
                     'sluice_cache_requests_total{status="hit"}', "sluice_breaker_state",
                     "sluice_upstream_errors_total"):
        assert _query(prometheus, f"count({selector})"), selector


@needs_prometheus
def test_prometheus_loaded_the_rules(prometheus):
    groups = httpx.get(f"{prometheus}/api/v1/rules").json()["data"]["groups"]
    names = {r["name"] for g in groups for r in g["rules"]}
    assert len(names) == 12 and "SluiceHighErrorRate" in names
    assert all(r["health"] != "err" for g in groups for r in g["rules"])


@needs_prometheus
def test_promtool_checks_and_unit_tests_the_rules():
    check = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    tests = sorted((ROOT / "dashboards" / "alerts" / "tests").glob("*.yml"))
    assert tests
    run = subprocess.run([PROMTOOL, "test", "rules", *map(str, tests)], capture_output=True, text=True,
                         cwd=tests[0].parent)
    assert run.returncode == 0, run.stdout + run.stderr
    fired = set(re.findall(r"alertname: (\w+)", "".join(t.read_text() for t in tests)))
    assert fired == {r.split(":")[0] for r in _alert_names()}


def _alert_names() -> set[str]:
    import yaml
    rules = yaml.safe_load(RULES.read_text())
    return {r["alert"] for g in rules["groups"] for r in g["rules"]}
