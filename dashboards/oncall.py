"""On-call (Prometheus, real time): is the gateway healthy right now, and if not, where.

Every expression reads the gateway's own /metrics (telemetry/metrics.py, gateway/quota/
metrics.py, monitoring/metrics.py); `$tenant`, `$public_model` and `$deployment` are
multi-value regex variables ("All" = `.*`)."""

from __future__ import annotations

from dashboards.board import DashboardSpec
from dashboards.panels import PrometheusPanel as P

R = "$__rate_interval"
REQ = 'sluice_requests_total{tenant=~"$tenant", public_model=~"$public_model"}'
MODEL = 'public_model=~"$public_model"'


def _quantiles(metric: str, selector: str, by: str = "") -> tuple[tuple[str, str], ...]:
    group = f"sum by (le{', ' + by if by else ''})"
    legend = "{{" + by + "}} " if by else ""
    return tuple((f"histogram_quantile({q}, {group} (rate({metric}_bucket{{{selector}}}[{R}])))",
                  f"{legend}p{round(q * 100)}") for q in (0.5, 0.95, 0.99))


ROWS = [
    ("Now", [
        P("Requests/s", "stat", ((f"sum(rate({REQ}[{R}]))", "requests/s"),), unit="reqps", width=6, height=4),
        P("Server error ratio", "stat", ((
            f'sum(rate(sluice_requests_total{{status_class="5xx", tenant=~"$tenant", public_model=~"$public_model"}}'
            f"[{R}])) / sum(rate({REQ}[{R}]))", "5xx ratio"),), unit="percentunit", width=6, height=4),
        P("p99 latency", "stat", ((
            f"histogram_quantile(0.99, sum by (le) (rate(sluice_request_duration_seconds_bucket{{{MODEL}}}[{R}])))",
            "p99"),), unit="s", width=6, height=4),
        P("Open breakers", "stat", (('count(sluice_breaker_state{deployment=~"$deployment"} == 2) or vector(0)',
                                     "open"),), width=6, height=4),
    ]),
    ("Traffic and errors", [
        P("Requests/s by public model", "timeseries",
          ((f"sum by (public_model) (rate({REQ}[{R}]))", "{{public_model}}"),), unit="reqps", stack=True),
        P("Requests/s by status class", "timeseries",
          ((f"sum by (status_class) (rate({REQ}[{R}]))", "{{status_class}}"),), unit="reqps", stack=True),
        P("Errors/s by type", "timeseries", ((
            f"sum by (error_type) (rate(sluice_request_errors_total{{{MODEL}}}[{R}]))", "{{error_type}}"),),
          unit="reqps"),
    ]),
    ("Latency", [
        P("Latency p50 / p95 / p99", "timeseries", _quantiles("sluice_request_duration_seconds", MODEL), unit="s"),
        P("Time to first token p50 / p95 / p99", "timeseries",
          _quantiles("sluice_time_to_first_token_seconds", MODEL), unit="s"),
        P("Gateway overhead p50 / p95 / p99", "timeseries",
          _quantiles("sluice_gateway_overhead_seconds", 'operation=~".+"'), unit="s"),
    ]),
    ("Upstreams", [
        P("Attempts per request", "timeseries", ((
            f"sum(rate(sluice_upstream_attempts_total{{{MODEL}}}[{R}])) / sum(rate({REQ}[{R}]))", "attempts/request"),)),
        P("Fallbacks/s by public model", "timeseries", ((
            f"sum by (public_model) (rate(sluice_fallbacks_total{{{MODEL}}}[{R}]))", "{{public_model}}"),),
          unit="reqps"),
        P("Breaker state (0 closed, 1 half-open, 2 open)", "timeseries", ((
            'max by (deployment) (sluice_breaker_state{deployment=~"$deployment"})', "{{deployment}}"),)),
        P("Upstreams out of capacity (429 / 503 / breaker open on every deployment)", "timeseries", ((
            f'sum by (public_model) (rate(sluice_request_errors_total{{error_type="no_deployment_available", {MODEL}}}'
            f"[{R}]))", "{{public_model}}"),), unit="reqps", width=12),
        P("All deployments failed", "timeseries", ((
            f'sum by (public_model) (rate(sluice_request_errors_total{{error_type=~"all_deployments_failed|'
            f'upstream_timeout", {MODEL}}}[{R}]))', "{{public_model}}"),), unit="reqps", width=12),
        P("Failed upstream attempts/s by deployment (429, 5xx, timeouts, breaker skips)", "timeseries", ((
            f'sum by (deployment, outcome) (rate(sluice_upstream_errors_total{{deployment=~"$deployment"}}[{R}]))',
            "{{deployment}} {{outcome}}"),), unit="ops", width=24),
    ]),
    ("Cache, guardrails, limits", [
        P("Cache outcomes/s", "timeseries", ((
            f"sum by (status) (rate(sluice_cache_requests_total[{R}]))", "{{status}}"),), unit="reqps", stack=True),
        P("Guardrail outcomes/s", "timeseries", ((
            f'sum by (guardrail, action) (rate(sluice_guardrail_actions_total{{action!="pass"}}[{R}]))',
            "{{guardrail}} {{action}}"),), unit="ops"),
        P("Guardrail time p95", "timeseries", ((
            f"histogram_quantile(0.95, sum by (le) (rate(sluice_guardrail_duration_seconds_bucket[{R}])))", "p95"),),
          unit="s"),
        P("Limits hit/s", "timeseries", ((
            f'sum by (decision, scope) (rate(sluice_limit_decisions_total{{decision!="admitted"}}[{R}]))',
            "{{decision}} ({{scope}})"),), unit="reqps"),
        P("Budget left", "timeseries", ((
            "sluice_budget_remaining_usd / (sluice_budget_usd > 0)", "{{scope}} {{subject}} ({{period}})"),),
          unit="percentunit"),
        P("Limits Redis up", "stat", (("min(sluice_limits_redis_up)", "redis up"),), width=8),
    ]),
    ("Telemetry and drift", [
        P("Telemetry drops/s", "timeseries", ((
            f"sum by (queue, reason) (rate(sluice_telemetry_rows_dropped_total[{R}]))", "{{queue}} {{reason}}"),),
          unit="ops"),
        P("Telemetry queue fill", "timeseries", ((
            "sluice_telemetry_queue_depth / sluice_telemetry_queue_capacity", "{{queue}}"),), unit="percentunit"),
        P("ClickHouse write errors/s", "timeseries", ((
            f"sum by (queue) (rate(sluice_telemetry_write_errors_total[{R}]))", "{{queue}}"),), unit="ops"),
        P("Drift alerting", "timeseries", ((
            'max by (metric, public_model, deployment) (sluice_drift_alerting{public_model=~"$public_model", '
            'deployment=~"$deployment"})', "{{metric}} {{public_model}} {{deployment}}"),), width=12),
        P("Monitor runs/s by outcome", "timeseries", ((
            f"sum by (outcome) (rate(sluice_monitor_runs_total[{R}]))", "{{outcome}}"),), unit="ops", width=12),
    ]),
]


def spec() -> DashboardSpec:
    return DashboardSpec(
        uid="sluice-oncall", title="Sluice / On-call",
        description="Real-time health of the gateway and its providers from /metrics (Prometheus).",
        tags=("sluice", "prometheus", "on-call"), rows=ROWS, datasource="prometheus", time_from="now-1h",
        refresh="30s")
