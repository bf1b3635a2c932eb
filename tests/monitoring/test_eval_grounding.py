"""Grounding: the context rule, the sentence split, the lexical checks, and both offline
backends measured on the held-out half of the labelled set (floors a little under the
figures published in docs/monitoring.md)."""

from __future__ import annotations


import pytest

from monitoring.evaluators.bench import load_items, measure
from monitoring.evaluators.config import ContextRule
from monitoring.evaluators.context import extract_grounding, parse_messages
from monitoring.evaluators.grounding import EmbeddingGrounding, score_answer
from monitoring.evaluators.lexical import ContextIndex, numbers
from monitoring.evaluators.sentences import split_sentences


def test_context_from_tags_prefixes_and_tool_results_and_the_question():
    rule = ContextRule()
    tagged = extract_grounding("system: Answer from the documents.\nuser: <Document id=3>The pass mark is 40%, "
                               "and resits are capped at it.</Document>\nWhat is the resit cap?", rule)
    assert tagged.context == "The pass mark is 40%, and resits are capped at it."
    assert tagged.question == "What is the resit cap?" and tagged.sources == ("tag:document",)

    prefixed = extract_grounding("user: Context: Rent is 28 pounds per square foot.\nReviewed at the break.\n"
                                 "Question: What is the rent?", rule)
    assert prefixed.context == "Rent is 28 pounds per square foot.\nReviewed at the break."
    assert prefixed.question == "What is the rent?"

    tool = extract_grounding('user: Weather in Paris?\nassistant: \ntool: {"temp_c": 21, "sky": "clear all day"}'
                             "\nuser: And tomorrow?", rule)
    assert tool.context == '{"temp_c": 21, "sky": "clear all day"}' and tool.sources == ("tool",)
    assert tool.question == "And tomorrow?"

    assert extract_grounding("user: How deep is Lake Baikal?", rule).context == ""
    assert extract_grounding("user: <context>short</context> q", rule).context == ""        # under min_chars
    custom = ContextRule(tags=["kb"], line_prefixes=[], tool_results=False, min_chars=0)
    assert extract_grounding("user: <kb>Only this.</kb> <context>Not this.</context>", custom).context == "Only this."
    assert parse_messages("hello") == [("user", "hello")]


def test_sentences_split_on_boundaries_not_on_abbreviations_numbers_or_code():
    text = ("Dr. Smith measured 3.1% growth, e.g. in March. The rate then fell!\n- It closed at 2,850 points\n"
            "```python\nprint('not a claim. really')\n```\nYes.")
    assert split_sentences(text) == ["Dr. Smith measured 3.1% growth, e.g. in March.", "The rate then fell!",
                                     "It closed at 2,850 points"]


def test_lexical_checks_numbers_names_negation_and_opposites():
    index = ContextIndex("Lake Baikal reaches 1,642 metres. Only one river, the Angara, flows out of it. "
                         "Refunds are not available for monthly plans.")
    assert numbers("It is 1,642.0 m deep, two rivers") == {"1642", "2"}
    assert index.check("It reaches 1,246 metres.", "").unsupported_numbers == ["1246"]
    assert index.check("Only the Yenisei flows out of Baikal's basin.", "").unsupported_names == ["Yenisei"]
    assert index.check("Refunds are available for monthly plans.", "").negation_mismatch
    assert not index.check("Monthly plans get no refunds.", "").negation_mismatch
    assert index.check("Lake Baikal reaches 1,642 metres, the shallowest lake.", "").unsupported_numbers == []


def test_a_grounded_answer_scores_high_and_an_invented_one_low(embedder):
    context = ("The E-Volt 5 has a 77 kWh battery and a WLTP range of 480 km. On a 150 kW fast charger it charges "
               "from 10% to 80% in 28 minutes.")
    backend = EmbeddingGrounding(embedder)
    grounded = score_answer(backend, context, "It charges from 10% to 80% in 28 minutes on a 150 kW charger.")
    invented = score_answer(backend, context, "It charges in 28 minutes. It also comes with free lifetime "
                                              "charging at every Ionity station in Europe.")
    assert grounded.label == "supported" and grounded.score > 0.8
    assert invented.label == "unsupported" and invented.score < 0.3
    (unsupported,) = invented.details(0.5)["unsupported"]
    assert "Ionity" in unsupported["sentence"] and unsupported["problems"]
    assert score_answer(backend, context, "Sure!").label == "no_claims"


def test_labelled_set_is_large_enough_and_split_by_context():
    dev, heldout = load_items("dev"), load_items("heldout")
    assert len(dev) + len(heldout) >= 200
    assert {i["kind"] for i in heldout} == {"supported", "number", "name", "negation", "added_claim", "plain"}
    assert not {i["context"] for i in dev} & {i["context"] for i in heldout}     # no context on both sides
    assert len({i["domain"] for i in dev + heldout}) >= 20


@pytest.mark.parametrize("backend_name, floors", [("lexical", (0.88, 0.93, 0.80)), ("embedding", (0.89, 0.93, 0.80))])
def test_held_out_roc_auc_precision_and_recall(backend_name, floors, embedder):
    backend = EmbeddingGrounding(embedder if backend_name == "embedding" else None)
    result = measure(backend, load_items("heldout"), split="heldout")
    roc_auc, precision, recall = floors
    assert result.roc_auc >= roc_auc and result.precision >= precision and result.recall >= recall, result.line()
