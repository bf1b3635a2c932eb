"""OpenAI-compatible providers: OpenAI, Azure OpenAI, vLLM, Ollama, Groq, Together, ...

Azure differs only in transport details: the deployment is in the URL path, the API
version is a query parameter and the key travels in `api-key` instead of a bearer
token. The body format is the same, so one adapter covers both.
"""

from __future__ import annotations

from gateway.config import ProviderConfig
from gateway.providers.base import UnsupportedOperation, UpstreamRequest, Usage
from gateway.types import JSON, Operation, WireFormat

_PATHS = {
    Operation.CHAT: "/chat/completions",
    Operation.EMBEDDINGS: "/embeddings",
    Operation.RESPONSES: "/responses",
}


class OpenAIAdapter:
    wire_format = WireFormat.OPENAI

    def __init__(self, cfg: ProviderConfig):
        self._base = cfg.base_url
        self._azure = cfg.type == "azure"
        self._api_version = cfg.api_version or "2024-10-21"
        headers = {"content-type": "application/json", **cfg.headers}
        if cfg.api_key:
            if self._azure:
                headers["api-key"] = cfg.api_key
            else:
                headers["authorization"] = f"Bearer {cfg.api_key}"
        self._headers = headers
        self._urls: dict[tuple[Operation, str], str] = {}

    def supports(self, operation: Operation) -> bool:
        return operation in _PATHS

    def _url(self, operation: Operation, upstream_model: str) -> str:
        key = (operation, upstream_model)
        url = self._urls.get(key)
        if url is None:
            path = _PATHS.get(operation)
            if path is None:
                raise UnsupportedOperation(operation.value)
            if not self._azure:
                url = self._base + path
            elif operation is Operation.RESPONSES:
                url = f"{self._base}/openai/responses?api-version={self._api_version}"
            else:
                url = f"{self._base}/openai/deployments/{upstream_model}{path}?api-version={self._api_version}"
            if len(self._urls) < 1024:   # bounded: upstream model names come from config
                self._urls[key] = url
        return url

    def build(self, operation: Operation, body: bytes, upstream_model: str,
              extra_headers: dict[str, str] | None = None) -> UpstreamRequest:
        headers = self._headers if not extra_headers else {**self._headers, **extra_headers}
        return UpstreamRequest(self._url(operation, upstream_model), headers, body)

    def usage(self, response: JSON) -> Usage:
        return usage_from_openai(response.get("usage"))


def usage_from_openai(usage: JSON | None) -> Usage:
    if not usage:
        return Usage()
    details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
    return Usage(
        # chat/embeddings say prompt/completion; the Responses API says input/output
        input_tokens=usage.get("prompt_tokens", usage.get("input_tokens")) or 0,
        output_tokens=usage.get("completion_tokens", usage.get("output_tokens")) or 0,
        cached_tokens=details.get("cached_tokens") or 0,
    )
