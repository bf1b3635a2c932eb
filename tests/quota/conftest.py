"""Fixtures of the limits suite: a real Redis per module, gateways with limits in front of
the session's mock providers."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from tests.conftest import PRIMARY_KEY, Mock
from tests.redis_server import RedisServer, start_redis

MASTER_KEY = "sluice-test-master-key-0123456789"
_prefixes = itertools.count()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A plain Redis (no modules) of this module's own: some tests kill and restart it."""
    server = start_redis(with_search=False)
    yield server
    server.stop()


@pytest.fixture
def prefix() -> str:
    """Redis key prefix unique to the test (tests share a server)."""
    return f"t{next(_prefixes)}:"


def gateway_config(primary: Mock, *, limits: dict | None = None, keys: list | None = None,
                   admin: bool = False, telemetry: dict | None = None, **extra) -> dict:
    fast = {"connect_s": 1, "read_s": 5, "total_s": 10}
    cfg = {
        "telemetry": telemetry or {"enabled": False},
        "cache": {"enabled": False},
        "providers": {"primary": {"type": "openai", "base_url": f"{primary.url}/v1", "api_key": PRIMARY_KEY,
                                  "timeouts": fast}},
        "models": {"gpt": {"deployments": [{"provider": "primary", "model": "m1"}]},
                   "cut": {"deployments": [{"provider": "primary", "model": "fail-midstream"}]}},
        "router": {"retries": 0},
        **extra,
    }
    if limits is not None:
        cfg["limits"] = limits
    if keys is not None:
        cfg["keys"] = keys
    if admin:
        cfg["admin"] = {"master_key": MASTER_KEY}
    return cfg


# The mock model m1 is free in the built-in price table; these prices make budgets bite:
# a prompt of ~10 tokens + 16 output tokens costs ~$0.04 at $1,000 / $2,000 per 1M.
PRICES = {"m1": {"input": 1000.0, "output": 2000.0}}
