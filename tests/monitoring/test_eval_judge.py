"""The judge's parsing of replies, its one retry, and pairwise order swapping, with a
scripted chat function in place of the gateway (the gateway path: test_eval_pipeline.py)."""

from __future__ import annotations

import pytest

from monitoring.evaluators.config import JudgeConfig, evaluator_id
from monitoring.evaluators.gateway_client import Completion
from monitoring.evaluators.judge import Judge, MalformedVerdict, parse_pairwise, parse_single


def _reply(text: str, cost: float = 0.01) -> Completion:
    return Completion(text, "judge", 10, 10, cost)


@pytest.mark.parametrize("text", ["", "Great answer, 9/10.", '{"score": 11}', '{"score": "high"}', '{"score": true}',
                                  '["score", 7]', '{"score": 7', '{"critique": "fine"}'])
def test_malformed_single_replies_are_rejected(text):
    with pytest.raises(MalformedVerdict):
        parse_single(text)


def test_single_replies_parse_through_prose_and_fences():
    assert parse_single('```json\n{"score": 10, "critique": "exact"}\n```') == (1.0, "exact")
    assert parse_single('Here you go: {"score": 1, "critique": "wrong"} Thanks') == (0.0, "wrong")
    assert parse_pairwise('{"winner": "b", "critique": "B cites"}') == ("B", "B cites")
    assert parse_pairwise('{"winner": "TIE"}')[0] == "tie"
    with pytest.raises(MalformedVerdict):
        parse_pairwise('{"winner": "both"}')


def test_a_malformed_reply_is_retried_once_then_recorded_as_an_error():
    replies = iter(["no json here", '{"score": 8, "critique": "good"}'])
    calls: list[list[dict]] = []

    def chat(model, messages, **kwargs):
        calls.append(messages)
        return _reply(next(replies))

    cfg = JudgeConfig(enabled=True, model="judge-2025-01-01")
    result = Judge(cfg, chat).evaluate(conversation="user: hi", answer="hello")
    assert (result.label, round(result.score, 3)) == ("pass", round(7 / 9, 3))
    assert len(calls) == 2 and "JSON object only" in calls[1][-1]["content"]
    assert result.cost_usd == pytest.approx(0.02)

    result = Judge(cfg, lambda *a, **k: _reply("still prose")).evaluate(conversation="user: hi", answer="hello")
    assert result.score is None and result.label == "error"
    assert result.details["replies"] == ["still prose", "still prose"]


def _content_judge(prefer: str):
    """A judge that prefers the answer containing `prefer`, wherever it is placed."""
    def chat(model, messages, **kwargs):
        prompt = messages[-1]["content"]
        a = prompt.split("Answer A:")[1].split("Answer B:")[0]
        return _reply('{"winner": "%s", "critique": "c"}' % ("A" if prefer in a else "B"))
    return chat


def test_pairwise_runs_both_orders_and_a_flip_is_a_tie():
    cfg = JudgeConfig(enabled=True, model="judge", mode="pairwise", reference_model="ref")
    win = Judge(cfg, _content_judge("Paris")).evaluate(conversation="q", answer="Paris.", reference="Lyon, I think.")
    assert (win.label, win.score, win.details["verdicts"], win.details["position_flip"]) == ("win", 1.0, ["A", "B"],
                                                                                            False)
    assert win.details["length_ratio"] == pytest.approx(len("Paris.") / len("Lyon, I think."))
    loss = Judge(cfg, _content_judge("Lyon")).evaluate(conversation="q", answer="Paris.", reference="Lyon, I think.")
    assert (loss.label, loss.score) == ("loss", 0.0)
    always_a = Judge(cfg, lambda *a, **k: _reply('{"winner": "A"}')).evaluate(conversation="q", answer="x",
                                                                               reference="y")
    assert (always_a.label, always_a.score, always_a.details["position_flip"]) == ("tie", 0.5, True)


def test_evaluator_id_pins_model_rubric_and_parameters_not_sampling():
    base = JudgeConfig(enabled=True, model="judge-2025-01-01")
    assert evaluator_id("judge", base) == evaluator_id("judge", base.model_copy(update={"max_per_minute": 5}))
    for change in ({"model": "judge-2025-02-01"}, {"rubric": "Be strict."}, {"temperature": 0.3}):
        assert evaluator_id("judge", base) != evaluator_id("judge", base.model_copy(update=change))
