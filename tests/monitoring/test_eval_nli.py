"""The NLI backend's real loading code (transformers and onnxruntime) on a tiny random
cross-encoder the test builds and saves (no download): same probabilities from both
runtimes, the entailment label found, the grounding and self-consistency plumbing."""

from __future__ import annotations

import pytest

from monitoring.evaluators.consistency import SentenceAgreement
from monitoring.evaluators.grounding import score_answer
from monitoring.evaluators.nli import NliGrounding, entailment_index, load_cross_encoder, premises
from tests.monitoring.eval_tiny_nli import build_tiny_nli

PAIRS = [("water boils at degrees", "water boils"), ("lake baikal is deep", "the queen bee lays eggs"),
         ("router reset button", "light blinks amber")]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_tiny_nli(tmp_path_factory.mktemp("tiny-nli"), onnx=True)


def test_both_runtimes_load_the_saved_model_and_agree(tiny_model):
    torch_side = load_cross_encoder(str(tiny_model), runtime="transformers")
    onnx_side = load_cross_encoder(str(tiny_model), runtime="onnxruntime")
    a, b = torch_side.entailment(PAIRS), onnx_side.entailment(PAIRS)
    assert len(a) == len(b) == 3 and all(0 < p < 1 for p in a)
    assert a == pytest.approx(b, abs=1e-4)
    assert len(set(round(p, 6) for p in a)) > 1                  # the pairs reach the model, not a constant


def test_the_entailment_output_is_found_by_name_or_configured():
    assert entailment_index({0: "contradiction", 1: "entailment", 2: "neutral"}, 3) == 1
    assert entailment_index({"0": "hallucinated", "1": "consistent"}, 2) == 1
    assert entailment_index({0: "LABEL_0", 1: "LABEL_1"}, 2) == 1
    assert entailment_index({0: "x"}, 1) is None                 # one logit (HHEM): a sigmoid
    assert entailment_index({0: "yes", 1: "no", 2: "maybe"}, 3, "YES") == 0
    with pytest.raises(ValueError, match="entailment_label"):
        entailment_index({0: "a", 1: "b", 2: "c"}, 3)


def test_nli_grounding_and_agreement_use_the_encoder(tiny_model):
    encoder = load_cross_encoder(str(tiny_model), runtime="onnxruntime")
    result = score_answer(NliGrounding(encoder), "Water boils at degrees. Lake Baikal is deep.",
                          "Water boils at degrees here. The queen bee lays eggs daily.", threshold=0.5)
    assert len(result.sentences) == 2 and result.score == min(s.score for s in result.sentences)
    assert SentenceAgreement(encoder=encoder).agreement(["water boils at degrees"], ["water boils", "deep lake"])
    long_context = " ".join(f"Sentence number {i} is about the lake." for i in range(80))
    chunks = premises(long_context)
    assert len(chunks) > 1 and all(len(c) < 200 for c in chunks)
