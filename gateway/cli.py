"""`sluice`: serve the gateway, run the mock provider, migrate and report on traces."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from gateway.admin_cli import add_keys_command
from gateway.config import ConfigError, SluiceConfig
from gateway.dashboards_cli import add_dashboards_command
from gateway.defaults import resolve_config
from gateway.mock.cli import add_mock_arguments
from gateway.monitor_cli import add_monitor_command, add_report_drift_arguments, cmd_report_drift, cmd_report_quality

logger = logging.getLogger("sluice")


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway.app import create_app
    from gateway.server import run
    cfg = resolve_config(args.config)
    serving_gateway_url(cfg, args.host, args.port)
    workers = args.workers or cfg.server.workers
    if workers > 1:
        return _serve_workers(cfg, args, workers)
    return run(create_app(cfg), cfg, host=args.host, port=args.port, log_level=args.log_level)


def serving_gateway_url(cfg: SluiceConfig, host: str, port: int) -> None:
    """An in-process monitor's evaluators re-ask through this very server unless
    `monitoring.evaluators.gateway_url` says otherwise."""
    evaluators = cfg.monitoring.evaluators
    if evaluators.gateway_url is None:
        from monitoring.evaluators.config import local_gateway_url
        evaluators.gateway_url = local_gateway_url(host, port)


def _serve_workers(cfg: SluiceConfig, args: argparse.Namespace, workers: int) -> int:
    """N uvicorn workers sharing nothing but the telemetry collector, which this process
    starts first (the embedded chDB admits one process) and stops last (flushing). The
    workers get the resolved config through the spawn pipe (`gateway.server.run_workers`);
    they and the collector exit when this process dies, even by SIGKILL."""
    from gateway.server import run_workers
    from telemetry.collector import CollectorProcess
    from telemetry.service import COLLECTOR_SOCKET_ENV

    tel = cfg.telemetry
    if tel.enabled and tel.writer == "thread" and not tel.clickhouse_url:
        raise ConfigError("telemetry.writer: thread with the embedded ClickHouse (chDB) allows one worker; "
                          "use writer: process (the default) or a ClickHouse server URL")
    collector = None
    try:
        if tel.enabled and tel.writer == "process":
            collector = CollectorProcess(tel, cfg.resolved_data_dir())
            collector.start()
            os.environ[COLLECTOR_SOCKET_ENV] = str(collector.socket_path)
        logger.info("starting %d workers", workers)
        return run_workers(cfg, host=args.host, port=args.port, workers=workers, log_level=args.log_level)
    finally:
        if collector is not None:
            collector.stop()          # after every worker has flushed its queue into it


def cmd_mock_upstream(args: argparse.Namespace) -> int:
    from gateway.mock import run_mock_upstream
    from gateway.mock.cli import options_from_args
    run_mock_upstream(args.host, args.port, options_from_args(args))
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from telemetry.clickhouse import ChdbBusyError, open_from_config
    from telemetry.schema import migrate
    cfg = resolve_config(args.config, quiet=True)             # migrating needs no provider
    try:
        client, database = open_from_config(cfg.telemetry, cfg.resolved_data_dir())
    except ChdbBusyError as exc:
        # `sluice serve` migrates at start-up; the engine it holds is already up to date.
        print(f"sluice: {exc}; the running gateway applied the migrations when it started", file=sys.stderr)
        return 1
    applied = migrate(client, database, ttl_days=cfg.telemetry.ttl_days, cluster=cfg.telemetry.clickhouse)
    print(f"database {database}: " + (f"applied migrations {applied}" if applied else "already up to date"))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Print the traffic report. chDB lets one process open its directory: when the
    embedded default is in use by a running `sluice serve`, ask that gateway instead.
    `sluice report drift`: the drift monitor's latest run (gateway/monitor_cli.py)."""
    if args.what == "drift":
        return cmd_report_drift(args)
    if args.what == "quality":
        return cmd_report_quality(args)
    import httpx
    from telemetry.clickhouse import ChdbBusyError, open_from_config
    from telemetry.report import parse_since, report
    parse_since(args.since)                                   # fail early on a bad value
    cfg = resolve_config(args.config, quiet=True)
    if not cfg.telemetry.clickhouse_url:                      # the embedded chDB
        gateway_url = args.gateway or (f"http://127.0.0.1:{cfg.server.ops_port}" if cfg.server.ops_port
                                       else "http://127.0.0.1:8080")
        url = f"{gateway_url.rstrip('/')}/sluice/report"
        token = cfg.server.ops_token
        headers = {"authorization": f"Bearer {token}"} if token else {}
        try:
            resp = httpx.get(url, params={"since": args.since, "by": args.by}, headers=headers, timeout=60)
        except httpx.TransportError:
            resp = None                                       # no gateway running: open chDB here
        if resp is not None:
            if resp.status_code != 200:
                print(f"sluice: {url} answered {resp.status_code}: {resp.text}", file=sys.stderr)
                return 1
            print(resp.text, end="")
            return 0
    try:
        client, database = open_from_config(cfg.telemetry, cfg.resolved_data_dir())
    except ChdbBusyError as exc:
        print(f"sluice: {exc}; pass --gateway URL of the running gateway", file=sys.stderr)
        return 1
    print(report(client, database, since=args.since, by=args.by))
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = resolve_config(args.config)
    print(f"ok: {len(cfg.providers)} providers, {len(cfg.models)} models")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sluice", description="Sluice AI gateway")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="path to sluice.yaml (default: $SLUICE_CONFIG or ./sluice.yaml)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--workers", type=int, default=None,
                       help="worker processes (default: server.workers, 1); telemetry goes through one collector")
    serve.set_defaults(func=cmd_serve)

    mock = sub.add_parser("mock-upstream", help="run the mock model provider (OpenAI + Anthropic wire formats)")
    add_mock_arguments(mock)
    mock.set_defaults(func=cmd_mock_upstream)

    migrate = sub.add_parser("migrate", help="create or upgrade the ClickHouse tables")
    migrate.add_argument("--config")
    migrate.set_defaults(func=cmd_migrate)

    report = sub.add_parser("report", help="traffic, errors, latency, tokens, cost from ClickHouse; "
                                           "`report drift`: the drift monitor's state; "
                                           "`report quality`: evaluator scores and feedback")
    report.add_argument("what", nargs="?", default="traffic", choices=["traffic", "drift", "quality"])
    report.add_argument("--config")
    report.add_argument("--since", default="1h", help="window: 30m, 1h, 7d, ...")
    report.add_argument("--by", default="model", choices=["model", "deployment", "tenant", "key"])
    report.add_argument("--gateway", default=None,
                        help="running gateway to ask when the embedded ClickHouse is in use "
                             "(default: this host's server.ops_port, else port 8080)")
    add_report_drift_arguments(report)
    report.set_defaults(func=cmd_report)

    add_monitor_command(sub)                                  # sluice monitor run | baseline set|clear

    add_keys_command(sub)                                     # sluice keys create|list|get|revoke|rotate
    add_dashboards_command(sub)                               # sluice dashboards render

    check = sub.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("--config")
    check.set_defaults(func=cmd_check_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)   # one INFO line per upstream call otherwise
    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)   # a line per recognizer at start
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"sluice: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
