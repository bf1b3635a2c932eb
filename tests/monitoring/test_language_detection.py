"""Language detection (monitoring/language.py) on a labelled sample of prompts and answers."""

from __future__ import annotations

import json
import time
from pathlib import Path

from monitoring.language import detect_language, detect_many

SAMPLE = Path(__file__).parents[2] / "monitoring" / "data" / "language_labelled.jsonl"


def load_sample() -> list[dict[str, str]]:
    return [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_accuracy_on_the_labelled_sample() -> None:
    rows = load_sample()
    assert len(rows) >= 90 and len({r["language"] for r in rows}) >= 15
    detected = detect_many([r["text"] for r in rows])
    correct = sum(got == r["language"] for got, r in zip(detected, rows, strict=True))
    # measured 93/94 (one five-word Swedish sentence read as Danish); "" counts as wrong here
    assert correct / len(rows) >= 0.95, [(r["language"], got, r["text"][:40])
                                        for got, r in zip(detected, rows, strict=True) if got != r["language"]]


def test_fast_after_the_model_is_loaded() -> None:
    detect_language("warm up the model")
    texts = [r["text"] for r in load_sample()] * 5
    started = time.perf_counter()
    detect_many(texts)
    per_text = (time.perf_counter() - started) / len(texts)
    assert per_text < 0.002  # measured ~0.07 ms


def test_too_short_or_no_language_is_unknown() -> None:
    for text in ["", "   ", "ok", "42", "?!", "https://example.com/a/b", "```python\nx = 1\n```"]:
        assert detect_language(text) == "", text


def test_code_and_urls_do_not_decide_the_language() -> None:
    answer = ("Klar! Hier ist die Funktion, die du brauchst:\n```python\ndef add(a, b):\n    return a + b\n```\n"
              "Weitere Details findest du unter https://docs.python.org/3/tutorial/ in der offiziellen Anleitung.")
    assert detect_language(answer) == "de"


def test_codes_are_iso_639_1() -> None:
    detected = detect_many([r["text"] for r in load_sample()] + ["Wie geht es dir heute?", "Bonjour à tous !"])
    assert all(code == "" or (len(code) == 2 and code.isalpha() and code.islower()) for code in detected)
