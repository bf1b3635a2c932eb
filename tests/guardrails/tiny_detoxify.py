"""Builds a tiny random BERT checkpoint in Detoxify's own format (tests and bench).

The classifier's weights are zero and its bias is chosen, so each category's score
is a known constant whatever the text: tests pick thresholds around it. The model
accepts at most `max_positions` tokens while its tokenizer has no length limit, so
a long text makes Detoxify's real forward pass raise (the guardrail-error tests).
"""

from __future__ import annotations

from pathlib import Path

CLASSES = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]
WORDS = ["hello", "world", "you", "are", "the", "a", "is", "and", "to", "of"]


def build_checkpoint(directory: Path, biases: dict[str, float], max_positions: int = 64) -> tuple[Path, Path]:
    """Write config + tokenizer into `directory`/hf and the checkpoint; return both paths."""
    import torch
    import transformers

    hf_dir = directory / "hf"
    hf_dir.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *"abcdefghijklmnopqrstuvwxyz"]
    (hf_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")
    config = transformers.BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=max_positions,
        num_labels=len(CLASSES),
    )
    config.save_pretrained(hf_dir)
    # transformers 5 wants the vocabulary path as `vocab=`.
    transformers.BertTokenizer(vocab=str(hf_dir / "vocab.txt")).save_pretrained(hf_dir)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([biases.get(c, -6.0) for c in CLASSES]))
    checkpoint = directory / "tiny-detoxify.ckpt"
    torch.save(
        {
            "config": {
                "arch": {
                    "args": {
                        # Detoxify calls from_pretrained(model_type): a local directory.
                        "model_type": str(hf_dir),
                        "model_name": "BertForSequenceClassification",
                        "tokenizer_name": "BertTokenizer",
                        "num_classes": len(CLASSES),
                    }
                },
                "dataset": {"args": {"classes": CLASSES}},
            },
            "state_dict": model.state_dict(),
        },
        checkpoint,
    )
    return checkpoint, hf_dir
