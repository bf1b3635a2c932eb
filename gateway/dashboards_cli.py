"""`sluice dashboards render --out DIR [--since 24h] [--config F]`: the ClickHouse panels as
PNGs and an index.html, without Grafana (dashboards/render.py).

The traces are reached like `sluice monitor` reaches them (monitoring/store.py): a
ClickHouse server by URL; the embedded chDB through the running gateway's collector when
one holds it; else opened here."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def cmd_dashboards_render(args: argparse.Namespace) -> int:
    from gateway.defaults import resolve_config
    from telemetry.report import parse_since
    try:
        since = parse_since(args.since)
    except ValueError as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return 2
    try:
        from dashboards.render import render
    except ImportError as exc:
        print(f"sluice: rendering needs the dashboards extra (pip install 'sluice-gateway[dashboards]'): {exc}",
              file=sys.stderr)
        return 2
    from monitoring.store import TraceStoreUnavailable, open_trace_store
    cfg = resolve_config(args.config, quiet=True)
    try:
        client, database = open_trace_store(cfg.telemetry, cfg.resolved_data_dir())
    except TraceStoreUnavailable as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return 1
    out = Path(args.out)
    from dashboards.catalog import dashboards
    unknown = set(args.dashboard) - set(dashboards())
    if unknown:
        print(f"sluice: unknown dashboard(s) {sorted(unknown)}; known: {sorted(dashboards())}", file=sys.stderr)
        return 2
    rendered = render(client, database, out, since=since, only=args.dashboard)
    failed = [r for r in rendered if r.error]
    for r in failed:
        print(f"sluice: panel {r.dashboard} / {r.title!r} failed: {r.error}", file=sys.stderr)
    print(f"rendered {len(rendered)} panels ({len(failed)} failed) to {out / 'index.html'}")
    return 1 if failed else 0


def add_dashboards_command(sub: argparse._SubParsersAction) -> None:
    dashboards = sub.add_parser("dashboards", help="Grafana dashboards without Grafana")
    commands = dashboards.add_subparsers(dest="dashboards_command", required=True)
    render = commands.add_parser("render", help="render every ClickHouse panel to PNG, plus an index.html")
    render.add_argument("--out", required=True, help="directory for the PNGs and index.html")
    render.add_argument("--since", default="24h", help="time range ending now: 30m, 24h, 7d, ...")
    render.add_argument("--config", help="path to sluice.yaml (default: $SLUICE_CONFIG or ./sluice.yaml)")
    render.add_argument("--dashboard", action="append", default=[],
                        help="only this dashboard (repeatable): traffic, cost, cache, guardrails, quality, traces")
    render.set_defaults(func=cmd_dashboards_render)
