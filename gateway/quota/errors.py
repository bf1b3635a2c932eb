"""The refusals of the limits step, as gateway errors (they render in the caller's format).

    GatewayError
     ├── RateLimited         429  rpm / tpm / max_parallel of a key or tenant; Retry-After
     ├── BudgetExceeded      429  code insufficient_quota; names the budget and its reset
     └── QuotaUnavailable    503  Redis did not answer and the fail mode is closed, or a
                                  virtual key could not be looked up

Anthropic callers get `rate_limit_error` for both 429s (errors.error_body maps the status).
Messages name the key by its label or id and the tenant by name, never a secret.
"""

from __future__ import annotations

from gateway.errors import GatewayError


class RateLimited(GatewayError):
    status, type, code = 429, "requests", "rate_limit_exceeded"

    def __init__(self, message: str, *, tokens: bool = False, concurrency: bool = False,
                 headers: dict[str, str] | None = None):
        super().__init__(message, headers=headers)
        if tokens:
            self.type = "tokens"
        if concurrency:
            self.code = "concurrency_limit_exceeded"


class BudgetExceeded(GatewayError):
    status, type, code = 429, "insufficient_quota", "insufficient_quota"


class QuotaUnavailable(GatewayError):
    status, type, code = 503, "service_unavailable", "limits_unavailable"
