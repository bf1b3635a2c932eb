"""Policy resolution, versions, config validation, header summary."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from guardrails import GuardrailEngine, GuardrailsConfig, summarize
from guardrails.config import PolicyConfig
from guardrails.policy import policy_version


async def test_precedence_tenant_then_model_then_default(engine: GuardrailEngine) -> None:
    assert engine.policy_for("block", "secure-model").config is engine.config.tenants["block"]
    assert engine.policy_for("unknown-tenant", "secure-model").config is engine.config.models["secure-model"]
    assert engine.policy_for("unknown-tenant", "other-model").config is engine.config.default


async def test_empty_policy_means_no_guardrails(engine: GuardrailEngine) -> None:
    assert engine.policy_for("nothing", "secure-model") is None
    assert engine.policy_for("unknown-tenant", "open-model") is None


async def test_policy_applies_per_tenant(engine: GuardrailEngine) -> None:
    text = ["reach me at jane.doe@example.com"]
    blocked = await engine.check_input(engine.policy_for("block", "m"), text)
    masked = await engine.check_input(engine.policy_for("mask", "m"), text)
    by_model = await engine.check_input(engine.policy_for("someone", "secure-model"), text)
    assert blocked.violation is not None and masked.violation is None and by_model.violation is not None


async def test_all_guardrails_together(engine: GuardrailEngine) -> None:
    outcome = await engine.check_input(engine.policy_for("all", "m"), ["hello jane.doe@example.com"])
    assert outcome.violation is None
    assert summarize(outcome.results) == "pii=mask;injection=pass;toxicity=pass"


def test_version_is_stable_and_changes_with_the_policy() -> None:
    a = PolicyConfig.model_validate({"pii": {"score_threshold": 0.5}})
    b = PolicyConfig.model_validate({"pii": {"score_threshold": 0.5}})
    c = PolicyConfig.model_validate({"pii": {"score_threshold": 0.6}})
    detectors = {"spacy_model": None, "toxicity": None}
    assert policy_version(a, detectors) == policy_version(b, detectors)
    assert policy_version(a, detectors) != policy_version(c, detectors)
    assert policy_version(a, detectors) != policy_version(a, {"spacy_model": "en_core_web_sm", "toxicity": None})


async def test_engine_versions_differ_per_policy(engine: GuardrailEngine) -> None:
    versions = {engine.policy_for(t, "m").version for t in ("mask", "redact", "block", "inj")}
    assert len(versions) == 4


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"default": {"pii": {"input_acton": "mask"}}}, "input_acton"),
        ({"default": {"pii": {"recognizers": [{"entity": "X", "patterns": [{"regex": "("}]}]}}}, "invalid regex"),
        ({"default": {"toxicity": {"thresholds": {"rudeness": 0.5}}}}, "unknown toxicity category"),
        ({"default": {"injection": {"action": "redact"}}}, "action"),
        ({"toxicity_fallback": "shrug"}, "toxicity_fallback"),
    ],
)
def test_bad_config_names_the_key(raw: dict, fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        GuardrailsConfig.model_validate(raw)
    assert fragment in str(info.value)


def test_summary_keeps_the_strongest_action() -> None:
    from guardrails import GuardrailResult

    results = [
        GuardrailResult("pii", "input", "mask"),
        GuardrailResult("toxicity", "output", "pass"),
        GuardrailResult("toxicity", "output", "flag"),
    ]
    assert summarize(results) == "pii=mask;toxicity.output=flag"
