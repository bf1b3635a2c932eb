"""Provider adapters, picked by the provider's `type` in config."""

from __future__ import annotations

from gateway.config import ProviderConfig
from gateway.providers.anthropic import AnthropicAdapter
from gateway.providers.base import (
    ProviderAdapter,
    UnsupportedOperation,
    UpstreamRequest,
    Usage,
)
from gateway.providers.openai import OpenAIAdapter

ADAPTERS: dict[str, type] = {
    "openai": OpenAIAdapter,
    "azure": OpenAIAdapter,
    "anthropic": AnthropicAdapter,
}


def make_adapter(cfg: ProviderConfig) -> ProviderAdapter:
    return ADAPTERS[cfg.type](cfg)


__all__ = ["ProviderAdapter", "UnsupportedOperation", "UpstreamRequest", "Usage", "make_adapter"]
