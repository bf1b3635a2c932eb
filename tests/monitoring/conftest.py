"""Fixtures shared by the monitoring tests."""

from __future__ import annotations

import asyncio

import pytest


@pytest.fixture(scope="module")
def embedder(model_cache_dir):
    """The cache's local MiniLM, started (modules that need a wrapped one define their own)."""
    from cache.embedders import LocalEmbedder
    local = LocalEmbedder(model_cache_dir)
    asyncio.run(local.start())
    yield local
    asyncio.run(local.aclose())
