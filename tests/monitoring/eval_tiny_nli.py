"""A tiny random NLI cross-encoder built and saved by the tests (no download): a one-layer
BERT with a word-level vocabulary, three labels, in transformers format, optionally exported
to ONNX next to it. Its outputs mean nothing; the tests check the loading and the plumbing."""

from __future__ import annotations

import json
import re
from pathlib import Path

WORDS = sorted(set(re.findall(r"[a-z]+", """the answer context is supported by water boils at degrees lake baikal
deep metres queen bee lays eggs a day router reset button seconds light blinks amber green""")))
LABELS = {0: "contradiction", 1: "entailment", 2: "neutral"}


def build_tiny_nli(directory: Path, *, onnx: bool = False) -> Path:
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {token: i for i, token in enumerate(special + WORDS)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    fast.save_pretrained(directory)
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=128, num_labels=3, id2label=LABELS,
                        label2id={v: k for k, v in LABELS.items()})
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(directory)
    if onnx:
        _export_onnx(model, directory / "model.onnx")
    return directory


def _export_onnx(model, target: Path) -> None:
    import warnings

    import torch

    class _Logits(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).logits

    ids = torch.ones(2, 8, dtype=torch.long)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Logits(model), (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(target),
                          input_names=names, output_names=["logits"],
                          dynamic_axes={n: {0: "batch", 1: "seq"} for n in names} | {"logits": {0: "batch"}},
                          opset_version=17, dynamo=False)


def config_labels(directory: Path) -> dict:
    return json.loads((directory / "config.json").read_text())["id2label"]
