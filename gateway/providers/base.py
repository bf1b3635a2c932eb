"""The provider contract: what routing and the pipeline need from a wire format.

An adapter turns a body already in its own wire format into an upstream HTTP request,
and reads usage and the answer back out. It does no I/O, no retries, no caching:
routing only ever sees `ProviderAdapter`. Translation between formats happens before
`build` (see `gateway.translate`), so an adapter only knows its own dialect.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from gateway.types import JSON, Operation, WireFormat


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    url: str
    headers: dict[str, str]
    body: bytes


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0


class UnsupportedOperation(Exception):
    """The provider's API has no such endpoint (e.g. embeddings on Anthropic)."""


class ProviderAdapter(Protocol):
    wire_format: WireFormat

    def supports(self, operation: Operation) -> bool: ...

    def build(self, operation: Operation, body: bytes, upstream_model: str,
              extra_headers: dict[str, str] | None = None) -> UpstreamRequest:
        """`body` is serialised JSON in this adapter's format with the upstream model set."""
        ...

    def usage(self, response: JSON) -> Usage:
        """Token usage of a complete (non-stream) response in this format."""
        ...
