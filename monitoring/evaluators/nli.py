"""NLI / HHEM-class cross-encoders: P(premise entails hypothesis), for grounding and
self-consistency.

    encoder = load_cross_encoder("path/or/hub-id", runtime="transformers" | "onnxruntime")
    encoder.entailment([(premise, hypothesis), ...]) -> [p, ...]

- `transformers`: `AutoModelForSequenceClassification` + `AutoTokenizer` from a local
  directory or a hub id (downloaded by transformers into its cache the first time; set
  `HF_HUB_OFFLINE=1` to forbid that). `trust_remote_code` is off unless asked for
  (Vectara's HHEM-2.1-Open ships its own model class and needs it).
- `onnxruntime`: a directory holding `model.onnx`, `tokenizer.json` (the `tokenizers`
  format) and `config.json` (for `id2label`); no torch needed at run time.

Which output is "entailment": a one-logit model (HHEM) is read through a sigmoid; otherwise
the softmax of the label named by `entailment_label`, else the label whose name contains
"entail", "consistent" or "support", else (two labels) the second. Loading takes seconds and
inference is CPU bound: both are blocking and belong on a worker thread (the monitor job
runs in its own thread; nothing here touches an event loop).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from monitoring.evaluators.grounding import SentenceScore
from monitoring.evaluators.sentences import split_sentences

_ENTAILMENT_NAMES = ("entail", "consistent", "support")
WHOLE_CONTEXT_CHARS = 1500        # a context this short is one premise (≈ 400 tokens); longer: windows
BATCH = 16


class CrossEncoder(Protocol):
    name: str

    def entailment(self, pairs: list[tuple[str, str]]) -> list[float]: ...


def entailment_index(id2label: dict[Any, str], num_labels: int, wanted: str | None = None) -> int | None:
    """The logit that means "entailed" (None: a single logit, read through a sigmoid)."""
    if num_labels == 1:
        return None
    labels = {int(k): str(v).lower() for k, v in id2label.items()}
    if wanted is not None:
        for index, label in labels.items():
            if label == wanted.lower():
                return index
        raise ValueError(f"entailment_label {wanted!r} is not one of the model's labels {sorted(labels.values())}")
    for index, label in sorted(labels.items()):
        if any(name in label for name in _ENTAILMENT_NAMES):
            return index
    if num_labels == 2:
        return 1
    raise ValueError(f"cannot tell which of the labels {sorted(labels.values())} means entailment: "
                     f"set entailment_label")


def _probabilities(logits: np.ndarray, index: int | None) -> list[float]:
    logits = np.asarray(logits, dtype=np.float64)
    if index is None:
        return (1.0 / (1.0 + np.exp(-logits.reshape(len(logits), -1)[:, 0]))).tolist()
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (shifted[:, index] / shifted.sum(axis=1)).tolist()


class TransformersCrossEncoder:
    def __init__(self, model: str, *, entailment_label: str | None = None, max_length: int = 512,
                 trust_remote_code: bool = False) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self._torch = torch
        self.name = f"nli:{model}"
        self._tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=trust_remote_code)
        self._model = AutoModelForSequenceClassification.from_pretrained(model, trust_remote_code=trust_remote_code)
        self._model.eval()
        config = self._model.config
        self._index = entailment_index(config.id2label, config.num_labels, entailment_label)
        self._max_length = max_length

    def entailment(self, pairs: list[tuple[str, str]]) -> list[float]:
        out: list[float] = []
        for start in range(0, len(pairs), BATCH):
            chunk = pairs[start:start + BATCH]
            encoded = self._tokenizer([p for p, _ in chunk], [h for _, h in chunk], truncation="only_first",
                                      padding=True, max_length=self._max_length, return_tensors="pt")
            with self._torch.no_grad():
                logits = self._model(**encoded).logits.float().numpy()
            out += _probabilities(logits, self._index)
        return out


class OnnxCrossEncoder:
    def __init__(self, model_dir: str | Path, *, entailment_label: str | None = None, max_length: int = 512) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        directory = Path(model_dir)
        self.name = f"nli-onnx:{directory.name}"
        config = json.loads((directory / "config.json").read_text())
        id2label = config.get("id2label") or {0: "LABEL_0"}
        self._index = entailment_index(id2label, int(config.get("num_labels", len(id2label))), entailment_label)
        self._tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self._tokenizer.enable_truncation(max_length=max_length, strategy="only_first")
        self._tokenizer.enable_padding()
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self._session = ort.InferenceSession(str(directory / "model.onnx"), options,
                                             providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self._session.get_inputs()}

    def entailment(self, pairs: list[tuple[str, str]]) -> list[float]:
        out: list[float] = []
        for start in range(0, len(pairs), BATCH):
            encodings = self._tokenizer.encode_batch(pairs[start:start + BATCH])
            feed = {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                    "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
                    "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64)}
            (logits, *_) = self._session.run(None, {k: v for k, v in feed.items() if k in self._inputs})
            out += _probabilities(logits, self._index)
        return out


def load_cross_encoder(model: str, *, runtime: str = "transformers", entailment_label: str | None = None,
                       trust_remote_code: bool = False) -> CrossEncoder:
    """Blocking (seconds): call from a worker thread."""
    if runtime == "onnxruntime":
        return OnnxCrossEncoder(model, entailment_label=entailment_label)
    return TransformersCrossEncoder(model, entailment_label=entailment_label, trust_remote_code=trust_remote_code)


def premises(context: str, *, window: int = 3) -> list[str]:
    """The context as premises: whole when short, else overlapping runs of sentences."""
    if len(context) <= WHOLE_CONTEXT_CHARS:
        return [context]
    sentences = split_sentences(context, min_words=1) or [context]
    step = max(1, window - 1)
    return [" ".join(sentences[i:i + window]) for i in range(0, max(1, len(sentences) - 1), step)]


class NliGrounding:
    """Grounding backend: a sentence's score is its best entailment probability over the premises."""

    def __init__(self, encoder: CrossEncoder) -> None:
        self._encoder = encoder
        self.name = "nli"

    def score_sentences(self, context: str, sentences: list[str]) -> list[SentenceScore]:
        chunks = premises(context)
        probabilities = self._encoder.entailment([(c, s) for s in sentences for c in chunks])
        scores = []
        for i, sentence in enumerate(sentences):
            row = probabilities[i * len(chunks):(i + 1) * len(chunks)]
            best = int(np.argmax(row))
            scores.append(SentenceScore(sentence, float(row[best]), chunks[best]))
        return scores
