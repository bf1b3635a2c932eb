"""Every dashboard, by file name: the one list the build, the renderer and the tests read."""

from __future__ import annotations

from dashboards import cache, cost, guardrails, oncall, quality, traces, traffic
from dashboards.board import DashboardSpec


def dashboards() -> dict[str, DashboardSpec]:
    return {
        "oncall": oncall.spec(),
        "traffic": traffic.spec(),
        "cost": cost.spec(),
        "cache": cache.spec(),
        "guardrails": guardrails.spec(),
        "quality": quality.spec(),
        "traces": traces.spec(),
    }
