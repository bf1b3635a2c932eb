"""Measure a grounding backend on the labelled set (docs/monitoring.md, "Hallucination evaluators").

    python -m monitoring.evaluators.bench --backend embedding [--split heldout]
    python -m monitoring.evaluators.bench --backend nli --model cross-encoder/nli-deberta-v3-small
    python -m monitoring.evaluators.bench --backend nli --model vectara/hallucination_evaluation_model \
        --trust-remote-code
    python -m monitoring.evaluators.bench --backend nli --model ./my-nli --runtime onnxruntime

Prints ROC-AUC (unsupported as the positive class, `1 - score` as its score), precision and
recall of "unsupported" at the threshold, errors by kind, and milliseconds per 1,000
characters of context + answer (scoring only, the model loaded before the clock starts).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from monitoring.evaluators.grounding import GroundingBackend, score_answer


def load_items(split: str) -> list[dict[str, Any]]:
    text = resources.files("monitoring").joinpath(f"data/grounding_{split}.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@dataclass(slots=True)
class Measured:
    backend: str
    split: str
    n: int
    n_unsupported: int
    roc_auc: float
    precision: float
    recall: float
    ms_per_1k_chars: float
    misses: list[tuple[str, str, float]]      # (id, kind, score) of wrong decisions

    def line(self) -> str:
        return (f"{self.backend:10s} {self.split:8s} n={self.n} ({self.n_unsupported} unsupported)  "
                f"ROC-AUC {self.roc_auc:.3f}  precision {self.precision:.3f}  recall {self.recall:.3f}  "
                f"{self.ms_per_1k_chars:.1f} ms / 1k chars")


def measure(backend: GroundingBackend, items: list[dict[str, Any]], *, threshold: float = 0.5,
            split: str = "") -> Measured:
    from sklearn.metrics import roc_auc_score

    scores: list[float] = []
    chars = 0
    started = time.perf_counter()
    for item in items:
        result = score_answer(backend, item["context"], item["answer"], threshold=threshold)
        scores.append(1.0 if result.score is None else result.score)
        chars += len(item["context"]) + len(item["answer"])
    seconds = time.perf_counter() - started
    truth = [not item["supported"] for item in items]
    flagged = [s < threshold for s in scores]
    tp = sum(f and t for f, t in zip(flagged, truth, strict=True))
    misses = [(item["id"], item["kind"], round(s, 3))
              for item, s, f, t in zip(items, scores, flagged, truth, strict=True) if f != t]
    return Measured(backend.name, split, len(items), sum(truth), float(roc_auc_score(truth, [1 - s for s in scores])),
                    tp / max(1, sum(flagged)), tp / max(1, sum(truth)), seconds * 1000 / max(1, chars / 1000), misses)


def build_backend(name: str, *, model: str | None = None, runtime: str = "transformers",
                  models_dir: Path | None = None, trust_remote_code: bool = False) -> GroundingBackend:
    if name == "lexical":
        from monitoring.evaluators.grounding import EmbeddingGrounding
        return EmbeddingGrounding(None)
    if name == "embedding":
        import asyncio

        from cache.embedders import LocalEmbedder
        from monitoring.evaluators.grounding import EmbeddingGrounding
        embedder = LocalEmbedder(models_dir or Path(".sluice") / "models")
        asyncio.run(embedder.start())
        return EmbeddingGrounding(embedder)
    from monitoring.evaluators.nli import NliGrounding, load_cross_encoder
    if not model:
        raise SystemExit("--backend nli needs --model (a local path or a hub id)")
    return NliGrounding(load_cross_encoder(model, runtime=runtime, trust_remote_code=trust_remote_code))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["embedding", "lexical", "nli"], default="embedding")
    parser.add_argument("--model")
    parser.add_argument("--runtime", choices=["transformers", "onnxruntime"], default="transformers")
    parser.add_argument("--split", choices=["dev", "heldout"], default="heldout")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--models-dir", type=Path, help="where the local MiniLM is exported (default .sluice/models)")
    parser.add_argument("--trust-remote-code", action="store_true", help="nli: models with their own code (HHEM)")
    parser.add_argument("--misses", action="store_true", help="list the wrong decisions")
    args = parser.parse_args(argv)
    backend = build_backend(args.backend, model=args.model, runtime=args.runtime, models_dir=args.models_dir,
                            trust_remote_code=args.trust_remote_code)
    result = measure(backend, load_items(args.split), threshold=args.threshold, split=args.split)
    print(result.line())
    print("misses by kind:", dict(Counter(kind for _, kind, _ in result.misses)))
    if args.misses:
        for miss in result.misses:
            print("  ", *miss)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
