"""What the drift monitor costs: `python -m bench monitor [--rows N] [--no-throughput]`.

1. Generates N `llm_requests` rows (default 1,000,000) in an embedded chDB, in SQL
   (`INSERT ... SELECT FROM numbers()`, deterministic: `cityHash64(number, k)` is the
   randomness): 4 public models on 6 deployments, 6 tenants, 2 prompt versions each (72
   segments), the baseline week and the current hour (10% of the rows, so every segment
   has ~1,400 current requests), log-normal token counts and latencies, texts of random
   words as long as their token counts say (English, some French and Spanish), 2%
   refusals, 10% JSON-mode requests, 1% 5xx, 30% streams, cache hits; a 384-float prompt
   embedding on 10% of the rows only (what the semantic cache stores); one model's answers
   twice as long in the current hour and one deployment's `system_fingerprint` changed,
   so the run has alerts and events to write.
2. Times `monitoring.runner.run_once` over it (its own process, chDB opened directly),
   twice (the first pays for cold caches), with each ClickHouse call timed: where the time
   goes.
3. Unless --no-throughput: gateway throughput (bench/run.py's load generator and mock,
   `sluice serve` with telemetry on, on that same data directory) with the in-process
   monitor running back to back (`bench/configs/monitor-on.yaml`: interval 1 s) against
   the same gateway without it (`monitor-off.yaml`), in alternating rounds of one run; and
   how many monitor runs finished during the measured seconds.

Results: printed, and as JSON in bench/results/<time>-monitor/; docs/benchmarks.md and
docs/monitoring.md ("Cost") quote them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DATABASE = "sluice"
EMBEDDING_DIMS = 384

# (public model, deployment, response model, share of traffic)
DEPLOYMENTS = (
    ("gpt-4o", "openai/gpt-4o", "gpt-4o-2024-08-06", 0.30),
    ("gpt-4o", "azure/gpt-4o", "gpt-4o-2024-08-06", 0.15),
    ("claude-sonnet", "anthropic/claude-sonnet", "claude-sonnet-4-20250514", 0.25),
    ("gpt-4o-mini", "openai/gpt-4o-mini", "gpt-4o-mini-2024-07-18", 0.12),
    ("gpt-4o-mini", "azure/gpt-4o-mini", "gpt-4o-mini-2024-07-18", 0.08),
    ("llama-70b", "vllm/llama-70b", "meta-llama/Llama-3.3-70B-Instruct", 0.10),
)
TENANTS = ("search", "support", "sales", "legal", "eng", "marketing")
ENGLISH = ("the", "model", "answer", "customer", "order", "refund", "policy", "data", "report", "summary",
           "please", "explain", "why", "how", "price", "contract", "invoice", "delivery", "account", "error",
           "request", "latency", "system", "user", "document", "search", "result", "update", "team", "review",
           "and", "with", "for", "about", "this", "that", "from", "into", "which", "should", "could", "would")
FRENCH = ("le", "modèle", "réponse", "client", "commande", "remboursement", "politique", "données", "rapport",
          "résumé", "pourquoi", "comment", "prix", "contrat", "facture", "livraison", "compte", "erreur", "et",
          "avec", "pour", "dans", "cette", "qui", "doit", "pourrait")
SPANISH = ("el", "modelo", "respuesta", "cliente", "pedido", "reembolso", "política", "datos", "informe",
           "resumen", "por", "qué", "cómo", "precio", "contrato", "factura", "entrega", "cuenta", "error", "y",
           "con", "para", "sobre", "esta", "que", "debería")


def _u(k: int) -> str:
    """A uniform (0, 1) per row, the k-th of its kind (deterministic)."""
    return f"(((cityHash64(number, {k}) % 1000000) + 0.5) / 1000000)"


def _normal(k: int) -> str:
    return f"(sqrt(-2 * log({_u(k)})) * cos(2 * pi() * {_u(k + 1)}))"


def _pick(values: tuple, k: int) -> str:
    return f"{list(values)!r}[cityHash64(number, {k}) % {len(values)} + 1]"


def generate_sql(rows: int, first: int, now: datetime, database: str = DATABASE) -> str:
    """One INSERT of rows numbered first .. first + rows - 1."""
    cumulative, edges = 0.0, []
    for *_, share in DEPLOYMENTS:
        cumulative += share
        edges.append(round(cumulative, 6))
    dep_index = f"arrayFirstIndex(e -> {_u(1)} <= e, {edges!r})"
    models = [d[0] for d in DEPLOYMENTS]
    names = [d[1] for d in DEPLOYMENTS]
    responses = [d[2] for d in DEPLOYMENTS]
    end = now.replace(tzinfo=None)
    window_start = end - timedelta(hours=1)
    baseline_start = window_start - timedelta(days=7)
    words = (f"if({_u(20)} < 0.85, {list(ENGLISH)!r}, if({_u(20)} < 0.93, {list(FRENCH)!r}, {list(SPANISH)!r}))")
    text = ("arrayStringConcat(arrayMap(j -> vocab[cityHash64(number, j, {salt}) % length(vocab) + 1], "
            "range(least({n}, 600))), ' ')")
    return f"""
INSERT INTO `{database}`.llm_requests (timestamp, request_id, trace_id, span_id, tenant, key_id, operation,
    api_format, public_model, provider, provider_type, deployment, upstream_model, response_model,
    system_fingerprint, status_code, error_type, attempts, fallback, latency_ms, ttft_ms, gateway_overhead_ms,
    input_tokens, output_tokens, cached_tokens, cost_usd, cache_status, cache_similarity, guardrail_actions,
    guardrail_latency_ms, prompt_text, completion_text, prompt_embedding, finish_reason, stream, temperature,
    max_tokens, user, client_ip, user_agent, limited, prompt_fingerprint, response_format)
SELECT
    if(current, toDateTime64('{window_start:%Y-%m-%d %H:%M:%S}', 3, 'UTC') + toIntervalMillisecond(
           toUInt64({_u(2)} * 3600000)),
       toDateTime64('{baseline_start:%Y-%m-%d %H:%M:%S}', 3, 'UTC') + toIntervalMillisecond(
           toUInt64({_u(2)} * 604800000))) AS timestamp,
    hex(cityHash64(number, 3)) AS request_id, lower(concat(hex(cityHash64(number, 30)), hex(cityHash64(number, 31)))) AS trace_id,
    lower(hex(cityHash64(number, 4))) AS span_id,
    {_pick(TENANTS, 5)} AS tenant, concat('key-', tenant) AS key_id,
    if({_u(6)} < 0.95, 'chat', 'embeddings') AS operation, if(dep = 3, 'anthropic', 'openai') AS api_format,
    {models!r}[dep] AS public_model, splitByChar('/', deployment)[1] AS provider, provider AS provider_type,
    {names!r}[dep] AS deployment, splitByChar('/', deployment)[2] AS upstream_model,
    {responses!r}[dep] AS response_model,
    if(dep = 1 AND current AND {_u(7)} < 0.9, 'fp_new_build', concat('fp_', toString(dep))) AS system_fingerprint,
    multiIf({_u(8)} < 0.01, 502, {_u(8)} < 0.015, 429, 200) AS status_code,
    multiIf(status_code = 502, 'upstream_error', status_code = 429, 'rate_limited', '') AS error_type,
    1 + (status_code != 200) AS attempts, false AS fallback,
    toFloat32(exp(6.5 + 0.5 * {_normal(9)})) AS latency_ms,
    if(stream, toFloat32(latency_ms * 0.2), NULL) AS ttft_ms, toFloat32(0.3 + {_u(11)}) AS gateway_overhead_ms,
    toUInt32(least(exp(5.5 + 0.8 * {_normal(12)}), 30000)) AS input_tokens,
    toUInt32(least(exp(5 + 0.7 * {_normal(14)}) * if(dep = 6 AND current, 2, 1), 8000)) AS output_tokens,
    toUInt32(0) AS cached_tokens, input_tokens * 2.5e-6 + output_tokens * 1e-5 AS cost_usd,
    multiIf({_u(16)} < 0.6, 'off', {_u(16)} < 0.9, 'miss', 'hit') AS cache_status,
    if(cache_status = 'hit', toFloat32(1.0), NULL) AS cache_similarity,
    if({_u(17)} < 0.02, ['pii:mask'], []) AS guardrail_actions, toFloat32(1.5) AS guardrail_latency_ms,
    {text.format(n="toUInt32(input_tokens * 0.75)", salt=1)} AS prompt_text,
    multiIf(status_code != 200, '',
            {_u(18)} < 0.02, 'I''m sorry, but I can''t help with that request.',
            json, if({_u(19)} < 0.97, concat('{{"answer": "', {text.format(n="20", salt=2)}, '"}}'), '{{"answer": '),
            {text.format(n="toUInt32(output_tokens * 0.75)", salt=3)}) AS completion_text,
    if({_u(21)} < 0.1 AND operation = 'chat',
       arrayMap(j -> toFloat32(((cityHash64(number, j, 7) % 2000) - 1000) / 1000.0), range({EMBEDDING_DIMS})),
       []) AS prompt_embedding,
    multiIf(status_code != 200, '', {_u(22)} < 0.05, 'length', {_u(22)} < 0.1, 'tool_calls', 'stop') AS finish_reason,
    {_u(23)} < 0.3 AS stream, toFloat32(0.7) AS temperature, toUInt32(1024) AS max_tokens, '' AS user,
    '10.0.0.1' AS client_ip, 'openai-python/1.55' AS user_agent, '' AS limited,
    lower(hex(cityHash64(tenant, dep, cityHash64(number, 24) % 2))) AS prompt_fingerprint,
    if(json, 'json_schema', '') AS response_format
FROM (SELECT number, {dep_index} AS dep, {_u(25)} < 0.1 AS current, {_u(26)} < 0.1 AS json, {words} AS vocab
      FROM numbers({first}, {rows}))
SETTINGS max_block_size = 8192"""


def _connect(data_dir: Path):
    from telemetry.clickhouse import open_client
    from telemetry.schema import migrate
    client = open_client(f"chdb://{data_dir / 'clickhouse'}")
    migrate(client, DATABASE, ttl_days=30)
    return client


def cmd_generate(data_dir: Path, rows: int, chunk: int = 100_000) -> dict:
    client = _connect(data_dir)
    now = datetime.now(timezone.utc)
    started = time.perf_counter()
    for first in range(0, rows, chunk):
        client.command(generate_sql(min(chunk, rows - first), first, now))
    seconds = time.perf_counter() - started
    count = int(client.command(f"SELECT count() FROM `{DATABASE}`.llm_requests"))
    size = client.query(f"SELECT sum(bytes_on_disk), sum(data_uncompressed_bytes) FROM system.parts "
                        f"WHERE database = '{DATABASE}' AND table = 'llm_requests' AND active").result_rows[0]
    out = {"rows": count, "generate_s": round(seconds, 1), "bytes_on_disk": int(size[0]),
           "bytes_uncompressed": int(size[1]), "generated_at": now.isoformat()}
    (data_dir / "bench-monitor.json").write_text(json.dumps(out))     # time-run's `now`
    return out


class _TimedClient:
    """The client with each call timed (the first words of its SQL name it)."""

    def __init__(self, client) -> None:
        self._client = client
        self.calls: list[tuple[str, float]] = []

    def _timed(self, name: str, sql: str, call, *args, **kwargs):
        started = time.perf_counter()
        try:
            return call(*args, **kwargs)
        finally:
            self.calls.append((f"{name}: {' '.join(sql.split())[:90]}", time.perf_counter() - started))

    def query(self, sql, parameters=None, **kwargs):
        return self._timed("query", sql, self._client.query, sql, parameters=parameters, **kwargs)

    def command(self, sql, parameters=None, **kwargs):
        return self._timed("command", sql, self._client.command, sql, parameters=parameters, **kwargs)

    def insert(self, table, data, column_names="*", **kwargs):
        return self._timed("insert", f"INSERT {table}", self._client.insert, table, data,
                           column_names=column_names, **kwargs)


def cmd_time_run(data_dir: Path, runs: int = 2) -> dict:
    from monitoring.config import MonitoringConfig
    from monitoring.runner import run_once
    client = _connect(data_dir)
    cfg = MonitoringConfig()
    meta = data_dir / "bench-monitor.json"
    # the windows the rows were generated for, however long ago that was
    now = datetime.fromisoformat(json.loads(meta.read_text())["generated_at"]) if meta.exists() else None
    out = []
    for _ in range(runs):
        timed = _TimedClient(client)
        started, cpu_started = time.perf_counter(), time.process_time()
        result = run_once(timed, DATABASE, cfg, now=now)
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu_started           # this process: Python and chDB's threads
        in_sql = sum(s for _, s in timed.calls)
        slowest = sorted(timed.calls, key=lambda c: -c[1])[:8]
        out.append({"seconds": round(seconds, 2), "cpu_s": round(cpu, 2), "sql_s": round(in_sql, 2), "python_s": round(seconds - in_sql, 2),
                    "segments": result.segments, "metrics": len(result.metrics),
                    "alerting": len(result.alerting), "events": len(result.events), "calls": len(timed.calls),
                    "slowest": [(name, round(s, 2)) for name, s in slowest]})
    return {"runs": out}


def cmd_count_runs(data_dir: Path, since: str, until: str) -> dict:
    deadline = time.monotonic() + 60
    while True:                       # the last gateway's collector may still be flushing
        try:
            client = _connect(data_dir)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    rows = client.query(f"SELECT count(DISTINCT ts), min(ts), max(ts) FROM `{DATABASE}`.drift_metrics "
                        f"WHERE ts >= parseDateTime64BestEffort(%(a)s, 3) AND ts < parseDateTime64BestEffort(%(b)s, 3)",
                        parameters={"a": since, "b": until}).result_rows
    return {"runs": int(rows[0][0]), "first": rows[0][1], "last": rows[0][2]}


def _child(*args: str) -> dict:
    """A step in a process of its own: chDB admits one process per directory, and the
    gateways of step 3 need it free."""
    done = subprocess.run([sys.executable, "-m", "bench.monitor_cost", *args], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent)
    if done.returncode != 0:
        raise RuntimeError(f"bench.monitor_cost {args[0]} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def throughput(data_dir: Path, rounds: int, duration: float, connections: int, run_dir: Path,
               collector_priority: str = "idle") -> dict:
    from bench.run import BenchSettings, run_benchmark
    os.environ["SLUICE_BENCH_MONITOR_DATA"] = str(data_dir)
    # idle (the default): the monitor's SQL, run by the collector, gets only CPU the requests
    # leave; normal: it competes with them (the harder test)
    os.environ["SLUICE_BENCH_COLLECTOR_PRIORITY"] = collector_priority
    settings = BenchSettings(targets=("sluice:monitor-off", "sluice:monitor-on"), duration=duration,
                             warmup=2.0, connections=connections, rounds=rounds)
    started = datetime.now(timezone.utc)
    rows, _ = run_benchmark(settings, run_dir)
    finished = datetime.now(timezone.utc)
    rates = {row.target: row.result.requests_per_second if row.result else None for row in rows}
    per_round = {row.target: list(row.rounds or ()) for row in rows}
    off, on = rates.get("sluice:monitor-off"), rates.get("sluice:monitor-on")
    runs = _child("count-runs", "--data-dir", str(data_dir), "--since", started.isoformat(),
                  "--until", finished.isoformat())["runs"]
    return {"collector_priority": collector_priority, "requests_per_second": rates, "rounds": per_round,
            "ratio": round(on / off, 4) if on and off else None,
            "monitor_runs_during_benchmark": runs, "measured_s_with_monitor": rounds * (duration + 2.0)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench monitor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", nargs="?", default="all", choices=("all", "generate", "time-run", "count-runs"))
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--data-dir", type=Path, default=None, help="keep the generated chDB here (default: temp)")
    parser.add_argument("--no-throughput", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--collector-priority", choices=("idle", "normal"), default="idle",
                        help="telemetry.collector_priority of both gateways (the monitor's SQL runs there)")
    parser.add_argument("--since")
    parser.add_argument("--until")
    args = parser.parse_args(argv)
    if args.step != "all":                       # a child step: one JSON line on stdout
        data_dir = args.data_dir
        if args.step == "generate":
            out = cmd_generate(data_dir, args.rows)
        elif args.step == "time-run":
            out = cmd_time_run(data_dir)
        else:
            out = cmd_count_runs(data_dir, args.since, args.until)
        print(json.dumps(out, default=str))
        return 0

    run_dir = RESULTS_DIR / (time.strftime("%Y%m%d-%H%M%S") + "-monitor")
    run_dir.mkdir(parents=True, exist_ok=True)
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="sluice-monitor-bench-"))
    report: dict = {"rows_requested": args.rows, "data_dir": str(data_dir)}
    if not (data_dir / "clickhouse").exists():
        report["generate"] = _child("generate", "--data-dir", str(data_dir), "--rows", str(args.rows))
        print(f"generated: {report['generate']}", flush=True)
    report["run_once"] = _child("time-run", "--data-dir", str(data_dir))
    for i, run in enumerate(report["run_once"]["runs"], 1):
        print(f"run_once #{i}: {run['seconds']} s, {run['cpu_s']} s CPU ({run['sql_s']} s in ClickHouse, {run['python_s']} s in Python), "
              f"{run['segments']} segments, {run['metrics']} metrics, {run['alerting']} alerting, "
              f"{run['events']} events", flush=True)
        for name, seconds in run["slowest"]:
            print(f"    {seconds:7.2f} s  {name}")
    if not args.no_throughput:
        report["throughput"] = throughput(data_dir, args.rounds, args.duration, args.connections, run_dir,
                                          args.collector_priority)
        t = report["throughput"]
        print(f"throughput: {t['requests_per_second']} (rounds {t['rounds']}), monitor on / off = {t['ratio']}, "
              f"{t['monitor_runs_during_benchmark']} monitor runs finished meanwhile", flush=True)
    (run_dir / "monitor_cost.json").write_text(json.dumps(report, indent=2, default=str))
    print(f"results in {run_dir / 'monitor_cost.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
