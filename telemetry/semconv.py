"""Span and attribute names the gateway uses, in one place.

`gen_ai.*` follow the OpenTelemetry GenAI semantic conventions (client spans for model
calls: span name "{operation} {model}", kind CLIENT); `http.*`, `url.*`, `server.*`,
`error.type` the general HTTP conventions; `sluice.*` are this gateway's own.

Span tree of one request (names below):

    POST /v1/chat/completions        SERVER  (HTTP conventions + sluice.* summary)
    ├── sluice.auth                  INTERNAL
    ├── sluice.guardrail.input       INTERNAL  (sluice.guardrail.actions)
    ├── sluice.cache.lookup          INTERNAL  (sluice.cache.status, .similarity)
    ├── chat gpt-4o-mini             CLIENT    one per upstream attempt (gen_ai.*,
    │                                          sluice.deployment, sluice.attempt)
    ├── sluice.guardrail.output      INTERNAL
    └── sluice.cache.store           INTERNAL
"""

from __future__ import annotations

# -- GenAI semantic conventions -----------------------------------------------------
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"          # chat | embeddings | text_completion
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"            # openai | anthropic | azure.ai.openai
GEN_AI_SYSTEM = "gen_ai.system"                          # older name of the provider attribute
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_REQUEST_TEMPERATURE = "gen_ai.request.temperature"
GEN_AI_REQUEST_TOP_P = "gen_ai.request.top_p"
GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_SEED = "gen_ai.request.seed"
GEN_AI_REQUEST_STOP_SEQUENCES = "gen_ai.request.stop_sequences"
GEN_AI_REQUEST_FREQUENCY_PENALTY = "gen_ai.request.frequency_penalty"
GEN_AI_REQUEST_PRESENCE_PENALTY = "gen_ai.request.presence_penalty"
GEN_AI_REQUEST_CHOICE_COUNT = "gen_ai.request.choice.count"
GEN_AI_REQUEST_ENCODING_FORMATS = "gen_ai.request.encoding_formats"
GEN_AI_RESPONSE_ID = "gen_ai.response.id"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_OUTPUT_TYPE = "gen_ai.output.type"
GEN_AI_CONVERSATION_ID = "gen_ai.conversation.id"

OPERATION_CHAT = "chat"
OPERATION_EMBEDDINGS = "embeddings"
OPERATION_TEXT_COMPLETION = "text_completion"

# -- General conventions ------------------------------------------------------------
HTTP_REQUEST_METHOD = "http.request.method"
HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"
HTTP_ROUTE = "http.route"
URL_PATH = "url.path"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
CLIENT_ADDRESS = "client.address"
USER_AGENT_ORIGINAL = "user_agent.original"
ERROR_TYPE = "error.type"

# -- Sluice attributes --------------------------------------------------------------
SLUICE_REQUEST_ID = "sluice.request_id"
SLUICE_TENANT = "sluice.tenant"
SLUICE_KEY_ID = "sluice.key_id"                   # a non-secret id, never the key
SLUICE_API_FORMAT = "sluice.api_format"           # openai | anthropic
SLUICE_PUBLIC_MODEL = "sluice.public_model"
SLUICE_PROVIDER = "sluice.provider"               # configured provider name
SLUICE_DEPLOYMENT = "sluice.deployment"
SLUICE_ATTEMPT = "sluice.attempt"                 # 1-based, on each provider attempt span
SLUICE_ATTEMPTS = "sluice.attempts"               # total, on the server span
SLUICE_FALLBACK = "sluice.fallback"
SLUICE_STREAM = "sluice.stream"
SLUICE_TTFT_MS = "sluice.ttft_ms"
SLUICE_GATEWAY_OVERHEAD_MS = "sluice.gateway_overhead_ms"
SLUICE_COST_USD = "sluice.cost_usd"
SLUICE_USAGE_CACHED_TOKENS = "sluice.usage.cached_tokens"
SLUICE_CACHE_STATUS = "sluice.cache.status"       # hit | semantic-hit | miss | bypass | off | error
SLUICE_CACHE_SIMILARITY = "sluice.cache.similarity"
SLUICE_GUARDRAIL_NAME = "sluice.guardrail.name"
SLUICE_GUARDRAIL_ACTIONS = "sluice.guardrail.actions"   # list: "pii:mask", "toxicity:flag"
SLUICE_BREAKER_STATE = "sluice.breaker.state"
SLUICE_RETRY_REASON = "sluice.retry.reason"       # why the previous attempt was retried

# -- Span names ---------------------------------------------------------------------
SPAN_AUTH = "sluice.auth"
SPAN_RATE_LIMIT = "sluice.rate_limit"
SPAN_GUARDRAIL_INPUT = "sluice.guardrail.input"
SPAN_GUARDRAIL_OUTPUT = "sluice.guardrail.output"
SPAN_CACHE_LOOKUP = "sluice.cache.lookup"
SPAN_CACHE_STORE = "sluice.cache.store"
SPAN_ROUTE = "sluice.route"

# Response header carrying the trace id back to the caller.
TRACE_ID_HEADER = "x-sluice-trace-id"

_PROVIDER_NAMES = {"openai": "openai", "azure": "azure.ai.openai", "anthropic": "anthropic"}


def provider_name(provider_type: str) -> str:
    """`gen_ai.provider.name` for a Sluice provider type."""
    return _PROVIDER_NAMES.get(provider_type, provider_type)


def model_span_name(operation: str, model: str) -> str:
    """GenAI span name for one upstream call: "{gen_ai.operation.name} {gen_ai.request.model}"."""
    return f"{operation} {model}" if model else operation
