"""Errors a client can see, and how they render in each wire format.

    GatewayError                    status + OpenAI type/code; renders itself per format
     ├── BadRequest                 400  malformed JSON, wrong types, missing fields
     ├── Unauthorized               401  missing or unknown gateway key
     ├── Forbidden                  403  key not allowed to use the model
     ├── ModelNotFound              404  unknown public model
     ├── NotFound                   404  no such endpoint
     ├── MethodNotAllowed           405  e.g. GET on a POST endpoint
     ├── PayloadTooLarge            413  body over server.max_body_bytes
     ├── UpstreamRejected           4xx  the provider refused the request itself (no fallback)
     ├── BadUpstreamResponse        502  a provider answered something that is not its wire format
     ├── StreamInterrupted          502  (as an error event) the upstream failed after the first byte
     └── AllDeploymentsFailed       502 / 503 / 504, lists every attempt

Upstream transport failures inside routing are `gateway.upstream.UpstreamError`; the
router turns a run of them into `AllDeploymentsFailed`. Nothing here carries a stack
trace or a secret to the client.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from gateway.types import WireFormat

# Anthropic names its error types after the status; OpenAI uses free-form types.
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def anthropic_error_type(status: int) -> str:
    return _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def error_body(fmt: WireFormat, status: int, message: str, type_: str, code: str | None,
               param: str | None = None) -> bytes:
    if fmt is WireFormat.ANTHROPIC:
        return orjson.dumps({"type": "error", "error": {"type": anthropic_error_type(status), "message": message}})
    return orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


class GatewayError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers or {}

    def body(self, fmt: WireFormat) -> bytes:
        return error_body(fmt, self.status, self.message, self.type, self.code, self.param)


class BadRequest(GatewayError):
    status, type, code = 400, "invalid_request_error", "invalid_request"


class Unauthorized(GatewayError):
    status, type, code = 401, "authentication_error", "invalid_api_key"


class Forbidden(GatewayError):
    status, type, code = 403, "permission_error", "model_not_allowed"


class ModelNotFound(GatewayError):
    status, type, code = 404, "invalid_request_error", "model_not_found"


class NotFound(GatewayError):
    status, type, code = 404, "invalid_request_error", "unknown_url"


class MethodNotAllowed(GatewayError):
    status, type, code = 405, "invalid_request_error", "method_not_allowed"


class PayloadTooLarge(GatewayError):
    status, type, code = 413, "invalid_request_error", "request_too_large"


class GuardrailBlocked(GatewayError):
    """Content stopped by a guardrail policy (400, or 413 over its scan limit), or a
    guardrail that could not decide and fails closed (503, a server error the SDKs
    retry); the message names types, never values."""

    type, code = "invalid_request_error", "guardrail_blocked"

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status
        if status >= 500:
            self.type = "server_error"


class UpstreamRejected(GatewayError):
    """The provider answered 4xx for reasons of the request; passed on without fallback."""

    type, code = "invalid_request_error", "upstream_rejected"

    def __init__(self, message: str, status: int, raw_body: bytes | None = None, raw_format: WireFormat | None = None):
        super().__init__(message)
        self.status = status
        self.raw_body = raw_body
        self.raw_format = raw_format

    def body(self, fmt: WireFormat) -> bytes:
        # Same dialect: the provider's own error body is the most useful thing to return.
        if self.raw_body is not None and self.raw_format is fmt:
            return self.raw_body
        return super().body(fmt)


class BadUpstreamResponse(GatewayError):
    status, type, code = 502, "upstream_error", "bad_upstream_response"


class StreamInterrupted(GatewayError):
    status, type, code = 502, "upstream_error", "stream_interrupted"


@dataclass(slots=True)
class AttemptRecord:
    """One try against one deployment, as reported to the client and the trace."""

    deployment: str
    outcome: str            # "ok", "http_500", "timeout", "connect_error", "circuit_open", ...
    latency_ms: float
    status: int | None = None
    retry_after_s: float | None = None
    backoff_ms: float = 0.0      # time waited before this try
    started: float = 0.0         # perf_counter() at the start of the try (for spans)


class AllDeploymentsFailed(GatewayError):
    """Every candidate deployment failed or was unavailable; the message lists each try."""

    def __init__(self, public_model: str, attempts: list[AttemptRecord]):
        self.public_model = public_model
        self.attempts = attempts
        tried = "; ".join(f"{a.deployment}: {a.outcome}" for a in attempts) or "no deployment available"
        super().__init__(f"All deployments failed for model '{public_model}' ({tried})")
        # A deployment skipped by its open breaker says nothing of how the others failed:
        # two timeouts and a skipped retry are still a timeout (504), not a mixed failure.
        outcomes = {a.outcome for a in attempts}
        failed = outcomes - {"circuit_open"}
        if failed and failed <= {"timeout"}:
            self.status, self.type, self.code = 504, "timeout_error", "upstream_timeout"
        elif not outcomes or outcomes <= {"circuit_open", "http_429", "http_529", "http_503"}:
            self.status, self.type, self.code = 503, "service_unavailable", "no_deployment_available"
        else:
            self.status, self.type, self.code = 502, "upstream_error", "all_deployments_failed"
        retry_after = [a.retry_after_s for a in attempts if a.retry_after_s]
        if self.status == 503 and retry_after:
            self.headers = {"retry-after": str(max(1, round(min(retry_after))))}
