"""What the gateway hands the cache (CacheRequest) and what it gets back (CacheLookup)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

LookupStatus = Literal["hit", "semantic-hit", "miss", "bypass", "off", "error"]


@dataclass
class CacheRequest:
    tenant: str
    public_model: str
    api_format: Literal["openai", "anthropic"]
    operation: Literal["chat", "embeddings"]
    body: dict[str, Any]  # the caller's body as received, after input guardrails rewrote it
    directive: str | None = None  # the x-sluice-cache request header, parsed by parse_directive
    policy_version: str = ""  # guardrail policy version: part of every partition key


@dataclass
class CacheLookup:
    status: LookupStatus
    response: dict[str, Any] | None = None  # the stored complete response, in the caller's format
    similarity: float | None = None
    embedding: list[float] | None = None  # for telemetry, and reused by store()
    lookup_ms: float = 0.0
    embed_ms: float = 0.0
    # Keys computed during lookup, reused by store() so the request is canonicalised once.
    keys: Any = field(default=None, repr=False)


@dataclass(frozen=True)
class Directive:
    """The per-request cache header: `no-cache` (skip lookup, still store), `no-store`, `ttl=<s>`.

    Several may be combined with commas (`no-cache, ttl=60`). Unknown tokens are ignored so a
    typo degrades to normal caching rather than an error on the request path.
    """

    no_cache: bool = False
    no_store: bool = False
    ttl_s: int | None = None


def parse_directive(header: str | None) -> Directive:
    if not header:
        return Directive()
    no_cache = no_store = False
    ttl_s: int | None = None
    for token in header.lower().split(","):
        token = token.strip()
        if token == "no-cache":
            no_cache = True
        elif token == "no-store":
            no_store = True
        elif token.startswith("ttl="):
            try:
                value = int(token[4:])
            except ValueError:
                continue
            if value > 0:
                ttl_s = value
    return Directive(no_cache=no_cache, no_store=no_store, ttl_s=ttl_s)
