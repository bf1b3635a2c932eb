"""Options of the mock upstream: what a benchmark or a test tunes."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_MODELS: tuple[str, ...] = ("m1", "m2", "mock-chat", "mock-embed")


@dataclass
class MockOptions:
    """How the mock provider behaves.

    The defaults answer instantly with a short deterministic text, which makes the mock
    the baseline row of the benchmark; latency and pacing make it look like a real model.
    """

    latency_ms: float = 0.0  # delay before the response headers
    tokens_per_second: float = 0.0  # 0 = stream as fast as possible; else pace stream chunks
    output_tokens: int = 16  # words in a generated answer
    embedding_dim: int = 64
    api_key: str | None = None  # when set, requests must carry it (Bearer, x-api-key or api-key)
    models: tuple[str, ...] = field(default=DEFAULT_MODELS)  # what GET /v1/models lists
    recorded_requests: int = 200  # how many requests GET /_mock/requests keeps
