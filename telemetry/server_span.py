"""Span attributes derived from the request's `llm_requests` row and trace facts.

Nearly everything the server span says (tenant, key id, models, deployment, status,
tokens, cache and guardrail outcomes, sampling parameters) is already in the request
row. Deriving the attributes here, where spans are built (the collector), instead of
building a second copy of them per request on the gateway's event loop, is part of what
keeps tracing off the hot path; the gateway only sends what the row does not hold
(`extras`: response id, top_p, seed).
"""

from __future__ import annotations

from typing import Any

from telemetry import semconv as sc
from telemetry.records import REQUEST_COLUMNS

_I = {name: i for i, name in enumerate(REQUEST_COLUMNS)}
_ALWAYS = (  # (attribute, column): set on every server span
    (sc.HTTP_RESPONSE_STATUS_CODE, "status_code"),
    (sc.GEN_AI_OPERATION_NAME, "operation"),
    (sc.GEN_AI_REQUEST_MODEL, "public_model"),
    (sc.SLUICE_REQUEST_ID, "request_id"),
    (sc.SLUICE_TENANT, "tenant"),
    (sc.SLUICE_KEY_ID, "key_id"),
    (sc.SLUICE_API_FORMAT, "api_format"),
    (sc.SLUICE_PUBLIC_MODEL, "public_model"),
    (sc.SLUICE_ATTEMPTS, "attempts"),
    (sc.SLUICE_FALLBACK, "fallback"),
    (sc.SLUICE_STREAM, "stream"),
    (sc.SLUICE_CACHE_STATUS, "cache_status"),
)
_WHEN_SET = (  # (attribute, column): set when the row has a value
    (sc.SLUICE_GATEWAY_OVERHEAD_MS, "gateway_overhead_ms"),
    (sc.SLUICE_DEPLOYMENT, "deployment"),
    (sc.SLUICE_PROVIDER, "provider"),
    (sc.GEN_AI_RESPONSE_MODEL, "response_model"),
    (sc.SLUICE_TTFT_MS, "ttft_ms"),
    (sc.GEN_AI_REQUEST_TEMPERATURE, "temperature"),
    (sc.GEN_AI_REQUEST_MAX_TOKENS, "max_tokens"),
    (sc.ERROR_TYPE, "error_type"),
    (sc.SLUICE_CACHE_SIMILARITY, "cache_similarity"),
    (sc.SLUICE_COST_USD, "cost_usd"),
)
_ALWAYS_AT = tuple((attr, _I[col]) for attr, col in _ALWAYS)
_WHEN_SET_AT = tuple((attr, _I[col]) for attr, col in _WHEN_SET)


def server_span_attributes(row: tuple, extras: dict[str, Any] | None) -> dict[str, Any]:
    """Attributes of the request's SERVER span from its row (`queued_row()` order)."""
    attrs = {attr: row[i] for attr, i in _ALWAYS_AT}
    for attr, i in _WHEN_SET_AT:
        value = row[i]
        if value is not None and value != "":
            attrs[attr] = value
    if row[_I["provider_type"]]:
        attrs[sc.GEN_AI_PROVIDER_NAME] = sc.provider_name(row[_I["provider_type"]])
    if row[_I["finish_reason"]]:
        attrs[sc.GEN_AI_RESPONSE_FINISH_REASONS] = (row[_I["finish_reason"]],)
    tokens_in, tokens_out = row[_I["input_tokens"]], row[_I["output_tokens"]]
    if tokens_in or tokens_out:
        attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] = tokens_in or 0
        attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] = tokens_out or 0
    if row[_I["guardrail_actions"]]:
        attrs[sc.SLUICE_GUARDRAIL_ACTIONS] = tuple(row[_I["guardrail_actions"]])
    if extras:
        attrs.update(extras)
    return attrs


def attempt_span_attributes(operation: str, attempt: int, deployment: str, provider_type: str,
                            model: str, outcome: str, status: int | None) -> dict[str, Any]:
    """Attributes of one provider attempt's CLIENT span (GenAI client conventions)."""
    attrs: dict[str, Any] = {
        sc.GEN_AI_OPERATION_NAME: operation,
        sc.GEN_AI_PROVIDER_NAME: sc.provider_name(provider_type) if provider_type else "",
        sc.GEN_AI_REQUEST_MODEL: model,
        sc.SLUICE_DEPLOYMENT: deployment,
        sc.SLUICE_ATTEMPT: attempt,
        "sluice.attempt.outcome": outcome,
    }
    if status is not None:
        attrs[sc.HTTP_RESPONSE_STATUS_CODE] = status
    if outcome != "ok":
        attrs[sc.ERROR_TYPE] = outcome
    return attrs
