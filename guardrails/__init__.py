"""Guardrails for Sluice: PII (Presidio), toxicity (Detoxify), prompt injection.

The gateway's seam, in request order::

    engine = GuardrailEngine.from_config(cfg)      # app factory
    await engine.start()                           # lifespan; models load in threads
    policy = engine.policy_for(tenant, model)      # None -> skip guardrails
    outcome = await engine.check_input(policy, texts, roles)
    scanner = engine.output_scanner(policy, outcome.restorer)   # streams
    outcome = await engine.check_output(policy, text, restorer) # whole answers
    await engine.aclose()

Importing this package loads no model and imports neither Presidio nor torch.
"""

from guardrails.config import GuardrailsConfig, PolicyConfig
from guardrails.engine import GuardrailEngine
from guardrails.masking import Restorer
from guardrails.policy import Policy
from guardrails.results import (
    GuardrailResult,
    InputOutcome,
    OutputOutcome,
    ScanStep,
    Violation,
    summarize,
)
from guardrails.stream import OutputScanner

__all__ = [
    "GuardrailEngine",
    "GuardrailResult",
    "GuardrailsConfig",
    "InputOutcome",
    "OutputOutcome",
    "OutputScanner",
    "Policy",
    "PolicyConfig",
    "Restorer",
    "ScanStep",
    "Violation",
    "summarize",
]
