"""Self-consistency's separation, measured (docs/monitoring.md, "Hallucination evaluators").

    python -m tests.monitoring.eval_consistency_bench [--per-model 20] [--samples 3]

A mock provider scripted three ways behind one gateway (telemetry on a temporary chDB):
`stable` always gives the same answer; `paraphrase` gives one of five wordings of the same
facts; `random` gives one of eight answers with different facts (a model inventing). Each
gets the same questions; self-consistency (embedding backend, the local MiniLM) re-asks each
`samples` times through the gateway with the evaluator key. Prints the scores per model, the
ROC-AUC of paraphrase vs random, the time per evaluation, and a priced run against a budget.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx

WESTPHALIA = "The Treaty of Westphalia was signed in 1648 in Osnabrück and Münster. It ended the Thirty Years' War."
PARAPHRASES = [
    WESTPHALIA,
    "It was signed in 1648, in the cities of Osnabrück and Münster, and it brought the Thirty Years' War to an end.",
    "In 1648 the treaty was concluded at Osnabrück and Münster. This ended the Thirty Years' War.",
    "Osnabrück and Münster were where the treaty was signed, in 1648. It closed the Thirty Years' War.",
    "The peace was signed in 1648 at Münster and Osnabrück, ending the Thirty Years' War.",
]
RANDOM = [
    "The Treaty of Westphalia was signed in 1712 in Utrecht. It ended the War of the Spanish Succession.",
    "It was signed in 1598 in Nantes by Henry IV. It granted rights to the Huguenots.",
    "The treaty dates from 1815 and was agreed at the Congress of Vienna after Napoleon's defeat.",
    "Signed in 1919 at Versailles, it imposed reparations on Germany after the First World War.",
    "The treaty was concluded in 1494 at Tordesillas and divided the New World between Spain and Portugal.",
    "In 1555 the Peace of Augsburg let each prince choose the religion of his lands.",
    "It was signed in 1763 in Paris and ended the Seven Years' War.",
    "The treaty was signed in 1648 in Vienna by the Ottoman sultan. It ended the Great Turkish War.",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-model", type=int, default=20)
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--models-dir", type=Path, default=Path(".pytest_cache/d/sluice-models"))
    args = parser.parse_args(argv)

    from sklearn.metrics import roc_auc_score

    from cache.embedders import LocalEmbedder
    from monitoring.config import MonitoringConfig
    from monitoring.evaluators.run import Evaluators
    from tests.gateway_server import start_gateway
    from tests.mock_server import start_mock

    tmp = Path(tempfile.mkdtemp(prefix="sluice-consistency-"))
    mock, stop_mock = start_mock()
    httpx.post(f"{mock}/_mock/script", json=[{"model": "u-stable", "text": WESTPHALIA},
                                             {"model": "u-paraphrase", "texts": PARAPHRASES},
                                             {"model": "u-random", "texts": RANDOM}]).raise_for_status()
    url = f"chdb://{tmp}/clickhouse"
    key = "sk-bench-evaluator"
    gw = start_gateway({"data_dir": str(tmp / "data"), "telemetry": {"clickhouse_url": url, "writer": "thread",
                                                                      "flush_interval_s": 0.05},
                        "providers": {"mock": {"type": "openai", "base_url": f"{mock}/v1"}},
                        "models": {m: {"deployments": [{"provider": "mock", "model": f"u-{m}"}]}
                                   for m in ("stable", "paraphrase", "random")},
                        "monitoring": {"evaluator_key": key}})
    embedder = LocalEmbedder(args.models_dir)
    asyncio.run(embedder.start())
    try:
        for i in range(args.per_model):
            for model in ("stable", "paraphrase", "random"):
                httpx.post(f"{gw.url}/v1/chat/completions", timeout=30, json={
                    "model": model, "messages": [{"role": "user", "content": f"When and where was the Treaty of "
                                                                            f"Westphalia signed? (asked {i})"}]})
        assert gw.gateway.telemetry.flush(timeout_s=10)
        client = gw.gateway.telemetry.sink.connection.get()
        database = gw.gateway.telemetry.sink.connection.database
        cfg = MonitoringConfig(evaluator_key=key, evaluators={
            "enabled": True, "gateway_url": gw.url, "settle_s": 0, "grounding": {"enabled": False},
            "consistency": {"enabled": True, "samples": args.samples, "sample": {"rate": 1.0},
                            "max_per_minute": 1000}})
        started = time.perf_counter()
        run = Evaluators(cfg, embedder=embedder).run(client, database)
        seconds = time.perf_counter() - started
        scores: dict[str, list[float]] = {}
        for row in run.rows:
            scores.setdefault(row.public_model, []).append(row.score)
        for model, values in sorted(scores.items()):
            print(f"{model:10s} n={len(values)} mean {statistics.mean(values):.3f} min {min(values):.3f} "
                  f"max {max(values):.3f}")
        def separation(steady: str) -> float:
            truth = [0] * len(scores[steady]) + [1] * len(scores["random"])
            return float(roc_auc_score(truth, [1 - s for s in scores[steady] + scores["random"]]))
        print(f"ROC-AUC paraphrase vs random: {separation('paraphrase'):.3f}; "
              f"stable vs random: {separation('stable'):.3f}")
        print(f"{len(run.rows)} evaluations x {args.samples} re-asks in {seconds:.1f} s "
              f"({seconds * 1000 / max(1, len(run.rows)):.0f} ms each)")
    finally:
        asyncio.run(embedder.aclose())
        gw.stop()
        stop_mock()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
