"""`sluice monitor ...` and `sluice report drift`: the drift monitor from the command line.

    sluice monitor run [--once] [--config F]         runs (one, or every monitoring.interval_s)
    sluice monitor baseline set --segment S [--window-s N]   pin the last N seconds as the baseline
    sluice monitor baseline clear --segment S        back to the rolling baseline
    sluice report drift [--alerting] [--events-since 1d]  the latest run: alert flags, values, events
    sluice report quality [--since 1d]                   evaluator scores, feedback, judge vs human

The traces are opened with `monitoring.store.open_trace_store`: a ClickHouse server by URL,
the embedded chDB directly when no gateway holds it, else through the running gateway's
telemetry collector. A segment is `dimension=value` pairs: `public_model=gpt,tenant=team-a`
(dimensions left out match any value).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

from gateway.config import SluiceConfig

logger = logging.getLogger("sluice")
# Where the evaluators' re-asks and judge calls go when `monitoring.evaluators.gateway_url`
# is unset (the Helm chart sets it to the gateway's Service for its monitor Deployment).
GATEWAY_URL_ENV = "SLUICE_GATEWAY_URL"


def add_monitor_command(sub: argparse._SubParsersAction) -> None:
    monitor = sub.add_parser("monitor", help="the drift monitor over the traces (docs/monitoring.md)")
    actions = monitor.add_subparsers(dest="monitor_command", required=True)

    run = actions.add_parser("run", help="compare the last window with its baseline, write drift_metrics")
    run.add_argument("--config")
    run.add_argument("--once", action="store_true", help="one run, print its alerts and events, exit")
    run.set_defaults(func=cmd_monitor_run)

    baseline = actions.add_parser("baseline", help="pin or unpin a segment's baseline")
    which = baseline.add_subparsers(dest="baseline_command", required=True)
    pin = which.add_parser("set", help="pin the current window as the baseline of matching segments")
    pin.add_argument("--config")
    pin.add_argument("--segment", required=True,
                     help="public_model=..,deployment=..,tenant=..,prompt_fingerprint=.. (omitted: any)")
    pin.add_argument("--window-s", type=float, default=None, help="seconds back from now (default: window_s)")
    pin.add_argument("--note", default="")
    pin.set_defaults(func=cmd_baseline_set)
    clear = which.add_parser("clear", help="back to the rolling baseline for this segment pattern")
    clear.add_argument("--config")
    clear.add_argument("--segment", required=True)
    clear.set_defaults(func=cmd_baseline_clear)


def add_report_drift_arguments(report: argparse.ArgumentParser) -> None:
    report.add_argument("--alerting", action="store_true", help="drift: only the metrics that alert")
    report.add_argument("--events-since", default="1d", help="drift: model events first seen within (30m, 1d, ..)")


def _config(args: argparse.Namespace) -> SluiceConfig:
    from gateway.defaults import resolve_config
    return resolve_config(getattr(args, "config", None), quiet=True)


def _open_store(cfg: SluiceConfig) -> tuple[Any, str]:
    from monitoring.store import open_trace_store
    return open_trace_store(cfg.telemetry, cfg.resolved_data_dir())


def _embedder(cfg: SluiceConfig):
    """The cache's local embedder, for prompts stored without an embedding (None: skip that
    metric). Loaded only when the cache uses the local model, whose ONNX file the gateway
    has exported already."""
    if not (cfg.cache.enabled and cfg.cache.embedder.type == "local" and cfg.monitoring.embed_prompt_text):
        return None
    try:
        from pathlib import Path

        from cache.embedders import LocalEmbedder
        emb = cfg.cache.embedder
        embedder = LocalEmbedder(cfg.resolved_data_dir() / "models", Path(emb.model_dir) if emb.model_dir else None,
                                 emb.quantize, emb.max_batch)
        asyncio.run(embedder.start())
        return embedder
    except Exception as exc:           # an optional model: the embedding metrics say "skipped"
        logger.warning("monitor: no local embedder (%s): prompt embedding drift only where rows carry one", exc)
        return None


def cmd_monitor_run(args: argparse.Namespace) -> int:
    from monitoring.store import TraceStoreUnavailable
    cfg = _config(args)
    evaluators = cfg.monitoring.evaluators
    if evaluators.gateway_url is None and os.environ.get(GATEWAY_URL_ENV):     # the chart's Service
        from monitoring.evaluators.config import checked_gateway_url
        try:
            evaluators.gateway_url = checked_gateway_url(os.environ[GATEWAY_URL_ENV])
        except ValueError as exc:
            print(f"sluice: ${GATEWAY_URL_ENV}: {exc}", file=sys.stderr)
            return 2
    embedder = _embedder(cfg)
    try:
        if args.once:
            from monitoring.evaluators.job import MonitorJob
            from monitoring.report import render_table
            client, database = _open_store(cfg)
            job = MonitorJob()                        # the drift run, then the evaluators (when enabled)
            result = job(client, database, cfg.monitoring, embedder=embedder)
            job.close()
            if job.last_evaluation is not None:
                print(f"evaluators: {len(job.last_evaluation.rows)} evaluations "
                      f"({job.last_evaluation.seconds:.1f} s)")
            print(f"drift run: {result.segments} segments, {len(result.metrics)} metrics, "
                  f"{len(result.alerting)} alerting, {len(result.events)} events ({result.seconds:.1f} s)")
            if result.alerting:
                print(render_table(["segment", "metric", "value", "threshold"],
                                   [["/".join(p or "-" for p in (r.public_model, r.deployment, r.tenant,
                                                                  r.prompt_fingerprint)),
                                     r.metric, f"{r.value:.4g}", f"{r.threshold:.4g}"] for r in result.alerting]))
            for e in result.events:
                print(f"event {e.kind}: {e.public_model}/{e.deployment or '-'}/{e.tenant or '-'} "
                      f"{e.old_value or '(first)'} -> {e.new_value}{' ALERT' if e.alerting else ''}")
            return 0
        return _run_forever(cfg, embedder)
    except TraceStoreUnavailable as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return 1


def _run_forever(cfg: SluiceConfig, embedder) -> int:
    """MonitorLoop until SIGINT/SIGTERM: a Redis lock when one is configured (several
    monitor processes then take turns), its own /metrics on monitoring.metrics_port."""
    from monitoring.lock import RedisLock
    from monitoring.loop import MonitorLoop
    from monitoring.metrics import serve_metrics

    mon = cfg.monitoring
    url = mon.lock_redis_url(cfg.cache.redis_url, cfg.limits.redis_url)
    lock = RedisLock(url, ttl_s=mon.lock_ttl_s) if url else None
    loop = MonitorLoop(mon, lambda: _open_store(cfg), lock=lock, embedder=embedder)
    server = serve_metrics(loop.metrics, mon.metrics_port) if mon.metrics_port else None
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    loop.start()
    logger.info("monitor: running every %g s (window %g s, baseline %g s)", mon.interval_s, mon.window_s,
                mon.baseline_s)
    stop.wait()
    loop.stop()
    if server is not None:
        server.shutdown()
    return 0


def _pin(args: argparse.Namespace, active: bool) -> int:
    from monitoring.segments import parse_segment
    from monitoring.store import TraceStoreUnavailable
    from monitoring.windows import Range, pin_baseline
    try:
        pattern = parse_segment(args.segment)
    except ValueError as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return 2
    cfg = _config(args)
    now = datetime.now(timezone.utc)
    seconds = getattr(args, "window_s", None) or cfg.monitoring.window_s
    window = Range(now - timedelta(seconds=seconds), now)
    try:
        client, database = _open_store(cfg)
    except TraceStoreUnavailable as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return 1
    pin_baseline(client, database, pattern, window, now=now, note=getattr(args, "note", ""), active=active)
    if active:
        print(f"baseline of {pattern.label()} pinned to {window.start.isoformat(timespec='seconds')} .. "
              f"{window.end.isoformat(timespec='seconds')}")
    else:
        print(f"baseline of {pattern.label()} unpinned: the rolling baseline applies again")
    return 0


def cmd_baseline_set(args: argparse.Namespace) -> int:
    return _pin(args, active=True)


def cmd_baseline_clear(args: argparse.Namespace) -> int:
    return _pin(args, active=False)


def _print_report(args: argparse.Namespace, render) -> int:
    """Open the traces (directly or through a running gateway's collector) and print
    `render(client, database, now)`; 1 with the reason when they cannot be reached."""
    from monitoring.store import TraceStoreUnavailable
    try:
        client, database = _open_store(_config(args))
    except TraceStoreUnavailable as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return 1
    print(render(client, database, datetime.now(timezone.utc)), end="")
    return 0


def cmd_report_drift(args: argparse.Namespace) -> int:
    from monitoring.report import drift_report
    from telemetry.report import parse_since
    since = parse_since(args.events_since)
    return _print_report(args, lambda client, database, now: drift_report(
        client, database, now=now, events_since=since, only_alerting=args.alerting))


def cmd_report_quality(args: argparse.Namespace) -> int:
    """`sluice report quality`: monitoring/feedback_report.py over the last `--since`."""
    from monitoring.feedback_report import quality_report
    from telemetry.report import parse_since
    since = parse_since(args.since)
    return _print_report(args, lambda client, database, now: quality_report(
        client, database, now=now, since=since))
