"""Toxicity with Detoxify's real loading code on a tiny checkpoint, and its fallbacks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from guardrails import GuardrailEngine, GuardrailsConfig
from tests.guardrails.conftest import INSULT_SCORE


async def test_detoxify_checkpoint_loads(engine: GuardrailEngine) -> None:
    assert engine.toxicity_backend == "detoxify:tiny-detoxify.ckpt"


async def test_toxicity_block_names_categories(engine: GuardrailEngine) -> None:
    outcome = await engine.check_input(engine.policy_for("tox_block", "m"), ["hello world"])
    assert outcome.violation is not None
    assert outcome.violation.code == "toxicity_detected"
    assert outcome.violation.kinds == ("insult",)
    result = outcome.results[0]
    assert result.action == "block"
    assert result.scores["insult"] == pytest.approx(INSULT_SCORE, abs=1e-3)
    assert set(result.scores) == {"toxicity", "severe_toxicity", "obscene", "threat", "insult", "identity_attack"}


async def test_toxicity_flag_lets_the_request_through(engine: GuardrailEngine) -> None:
    outcome = await engine.check_input(engine.policy_for("tox_flag", "m"), ["hello world"])
    assert outcome.violation is None
    assert outcome.results[0].action == "flag"


async def test_toxicity_under_threshold_passes(engine: GuardrailEngine) -> None:
    outcome = await engine.check_input(engine.policy_for("tox_pass", "m"), ["hello world"])
    assert outcome.violation is None and outcome.results[0].action == "pass"


async def test_toxicity_output_on_whole_answer(engine: GuardrailEngine) -> None:
    answer = await engine.check_output(engine.policy_for("tox_out_only", "m"), "you are the world", None)
    assert answer.violation is not None and answer.violation.stage == "output"
    # on_input is false for this policy: the request itself is not scored.
    outcome = await engine.check_input(engine.policy_for("tox_out_only", "m"), ["hello"])
    assert outcome.results == [] and outcome.violation is None


async def test_concurrent_requests_share_forward_passes(engine: GuardrailEngine) -> None:
    policy = engine.policy_for("tox_pass", "m")
    batcher = engine._detectors.toxicity
    assert batcher is not None
    before = batcher.batches
    outcomes = await asyncio.gather(*(engine.check_input(policy, [f"hello world {i}"]) for i in range(8)))
    assert all(o.violation is None for o in outcomes)
    assert batcher.batches - before < 8


async def test_a_failing_text_does_not_fail_its_batch_mates(engine: GuardrailEngine) -> None:
    policy = engine.policy_for("raise_closed", "m")
    too_long = "hello world " * 80  # more tokens than the tiny model has positions
    good, bad = await asyncio.gather(engine.check_input(policy, ["hello"]), engine.check_input(policy, [too_long]))
    assert good.violation is None and good.results[0].action == "pass"
    assert bad.violation is not None and bad.violation.code == "guardrail_unavailable"


@pytest.fixture(scope="module")
async def light_engine(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[GuardrailEngine]:
    missing = tmp_path_factory.mktemp("nothing") / "missing.ckpt"
    cfg = GuardrailsConfig.model_validate(
        {"default": {"toxicity": {"thresholds": {"toxicity": 0.8, "threat": 0.7}}}, "toxicity_checkpoint": str(missing)}
    )
    eng = GuardrailEngine.from_config(cfg)
    await eng.start()
    yield eng
    await eng.aclose()


async def test_missing_weights_fall_back_to_the_light_classifier(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = GuardrailsConfig.model_validate(
        {"default": {"toxicity": {}}, "toxicity_checkpoint": str(tmp_path / "missing.ckpt")}
    )
    eng = GuardrailEngine.from_config(cfg)
    with caplog.at_level(logging.WARNING, logger="sluice.guardrails"):
        await eng.start()
    await eng.aclose()
    assert eng.toxicity_backend == "light"
    assert "could not be loaded" in caplog.text and "light offline classifier" in caplog.text


async def test_toxicity_model_null_means_the_light_classifier_without_a_download(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    import detoxify

    def no_download(*args, **kwargs):
        raise AssertionError("Detoxify was asked for weights")

    monkeypatch.setattr(detoxify, "Detoxify", no_download)
    cfg = GuardrailsConfig.model_validate({"default": {"toxicity": {}}, "toxicity_model": None})
    eng = GuardrailEngine.from_config(cfg)
    with caplog.at_level(logging.INFO, logger="sluice.guardrails"):
        await eng.start()
    await eng.aclose()
    assert eng.toxicity_backend == "light"
    assert "could not be loaded" not in caplog.text and "toxicity_model: null" in caplog.text


async def test_light_classifier_blocks_abuse_and_threats(light_engine: GuardrailEngine) -> None:
    policy = light_engine.policy_for("t", "m")
    clean = await light_engine.check_input(policy, ["Could you help me plan a birthday party?"])
    assert clean.violation is None
    abuse = await light_engine.check_input(policy, ["you are a stupid worthless idiot"])
    assert abuse.violation is not None and "toxicity" in abuse.violation.kinds
    threat = await light_engine.check_input(policy, ["I'm going to find you and hurt you"])
    assert threat.violation is not None and "threat" in threat.violation.kinds


async def test_fail_closed_fallback_refuses_everything(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = GuardrailsConfig.model_validate(
        {
            # The policy says fail open; the operator's fail-closed fallback still wins.
            "default": {"toxicity": {}, "fail": "open"},
            "toxicity_checkpoint": str(tmp_path / "missing.ckpt"),
            "toxicity_fallback": "fail-closed",
        }
    )
    eng = GuardrailEngine.from_config(cfg)
    with caplog.at_level(logging.ERROR, logger="sluice.guardrails"):
        await eng.start()
    try:
        assert eng.toxicity_backend == "unavailable"
        assert "fail-closed" in caplog.text
        outcome = await eng.check_input(eng.policy_for("t", "m"), ["hello"])
        assert outcome.violation is not None and outcome.violation.status == 503
        assert outcome.results[0].action == "error"
    finally:
        await eng.aclose()


def test_light_scorer_matches_the_packaged_model_exactly():
    # The light scorer computes alt-profanity-check's calibrated ensemble directly
    # (for speed); it must give the package's own probabilities.
    import numpy as np
    from profanity_check import predict_prob

    from guardrails.toxicity import LightScorer

    texts = ["you are an idiot and I hate you", "what a lovely day in Paris", "shut up, moron",
             "Summarise the trade-offs between latency and cost.", ""]
    assert np.allclose(LightScorer().probabilities(texts), predict_prob(texts), atol=1e-12)
