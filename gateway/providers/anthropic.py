"""Anthropic's native Messages API."""

from __future__ import annotations

from gateway.config import ProviderConfig
from gateway.providers.base import UnsupportedOperation, UpstreamRequest, Usage
from gateway.types import JSON, Operation, WireFormat

ANTHROPIC_VERSION = "2023-06-01"


class AnthropicAdapter:
    wire_format = WireFormat.ANTHROPIC

    def __init__(self, cfg: ProviderConfig):
        self._url = cfg.base_url + "/v1/messages"
        headers = {"content-type": "application/json", "anthropic-version": ANTHROPIC_VERSION, **cfg.headers}
        if cfg.api_key:
            headers["x-api-key"] = cfg.api_key
        self._headers = headers

    def supports(self, operation: Operation) -> bool:
        return operation is Operation.CHAT

    def build(self, operation: Operation, body: bytes, upstream_model: str,
              extra_headers: dict[str, str] | None = None) -> UpstreamRequest:
        if operation is not Operation.CHAT:
            raise UnsupportedOperation(operation.value)
        headers = self._headers if not extra_headers else {**self._headers, **extra_headers}
        return UpstreamRequest(self._url, headers, body)

    def usage(self, response: JSON) -> Usage:
        return usage_from_anthropic(response.get("usage"))


def usage_from_anthropic(usage: JSON | None) -> Usage:
    if not usage:
        return Usage()
    cached = usage.get("cache_read_input_tokens") or 0
    return Usage(
        # Anthropic counts cache reads apart from input_tokens; report the full prompt size.
        input_tokens=(usage.get("input_tokens") or 0) + cached + (usage.get("cache_creation_input_tokens") or 0),
        output_tokens=usage.get("output_tokens") or 0,
        cached_tokens=cached,
    )
