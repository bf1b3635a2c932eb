"""`RequestRecord`: one row of `llm_requests`, filled by the gateway pipeline.

Every field has a default so the pipeline fills what it knows (an auth failure knows
little, a streamed chat completion knows everything). Field order is the column order of
`llm_requests`; `REQUEST_COLUMNS` and `as_row()` are derived from it so the table, the
record and the writer cannot drift apart (a test checks the table against this list).
Never put secrets here: `key_id` is a non-secret identifier (a hash prefix), never a key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(slots=True)
class RequestRecord:
    # Request start: a UTC datetime, or epoch microseconds (what the gateway passes: one
    # datetime less per request, and rows travel to the collector as plain ints).
    timestamp: datetime | int = field(default_factory=_utcnow)
    request_id: str = ""
    trace_id: str = ""                    # 32 hex chars, same as otel_traces.TraceId
    span_id: str = ""                     # 16 hex chars: the server span of the request
    tenant: str = ""
    key_id: str = ""
    operation: str = "chat"               # chat | embeddings | responses
    api_format: str = "openai"            # openai | anthropic (the caller's wire format)
    public_model: str = ""                # the model name the caller asked for
    provider: str = ""                    # configured provider name
    provider_type: str = ""               # openai | azure | anthropic | ...
    deployment: str = ""
    upstream_model: str = ""              # model sent upstream
    response_model: str = ""              # model the upstream says answered
    system_fingerprint: str = ""
    status_code: int = 0                  # HTTP status returned to the caller
    error_type: str = ""                  # "" on success; e.g. rate_limited, upstream_timeout
    attempts: int = 0                     # upstream attempts, all deployments included
    fallback: bool = False                # answered by a deployment other than the first
    latency_ms: float = 0.0               # whole request, as the caller saw it
    ttft_ms: float | None = None          # time to first token (streams only)
    gateway_overhead_ms: float | None = None  # time spent outside upstream calls
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int | None = None
    cost_usd: float | None = None         # computed by Telemetry.record() when None
    cache_status: str = "off"             # hit | semantic-hit | miss | bypass | off | error
    cache_similarity: float | None = None
    guardrail_actions: list[str] = field(default_factory=list)  # "pii:mask", "toxicity:flag"
    guardrail_latency_ms: float | None = None
    prompt_text: str = ""                 # after redaction; "" when logging is off
    completion_text: str = ""
    prompt_embedding: list[float] | bytes = field(default_factory=list)  # bytes: float32, once queued
    finish_reason: str = ""
    stream: bool = False
    temperature: float | None = None
    max_tokens: int | None = None
    user: str = ""                        # the caller's `user` field
    client_ip: str = ""
    user_agent: str = ""
    limited: str = ""                     # refused by the gateway's limits: rate | budget | concurrency
    # Hash of the system prompt + tool schemas (16 hex, "" without either): one value per
    # version of an application's prompt, so the drift monitor sees a team's prompt change
    # as an event, not as drift (gateway/prompt_fingerprint.py).
    prompt_fingerprint: str = ""
    response_format: str = ""             # "" | json_object | json_schema (what the caller asked for)
    # "user", or "evaluator": a call of the monitor's evaluators (made with
    # monitoring.evaluator_key), which drift statistics and reports leave out.
    traffic: str = "user"
    # What telemetry could not store as it was given, column -> the value it had (as text):
    # filled where a value does not fit its column (`request_codec`), or where the gateway
    # had to replace one. None: nothing odd (almost every request).
    anomalies: dict[str, str] | None = None

    def as_row(self) -> tuple:
        """Values in `REQUEST_COLUMNS` order, for clickhouse-connect's insert."""
        return tuple(getattr(self, name) if name != "anomalies" else (self.anomalies or {})
                     for name in REQUEST_COLUMNS)


REQUEST_COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(RequestRecord))
# Columns the writer adds to every row: the gateway process that sent it (a random id per
# `CollectorClient`, "" in-process) and the row's sequence number there. A row the gateway
# resends to a restarted collector is recognised by them and written once
# (`request_codec.RequestArrowCodec.dedupe`).
INGEST_COLUMNS: tuple[str, ...] = ("ingest_client", "ingest_seq")
STORED_REQUEST_COLUMNS: tuple[str, ...] = REQUEST_COLUMNS + INGEST_COLUMNS
