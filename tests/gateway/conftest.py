"""A real gateway in front of two real mock providers, shared by the gateway tests."""

from __future__ import annotations

import anthropic
import openai
import pytest

from tests.conftest import BACKUP_KEY, PRIMARY_KEY, Mock
from tests.gateway_server import start_gateway

TEAM_A_KEY = "sluice-team-a-secret"
TEAM_B_KEY = "sluice-team-b-secret"


def fallback_model(first: str) -> dict:
    return {"strategy": "fallback", "deployments": [{"provider": "primary", "model": first},
                                                     {"provider": "backup", "model": "claude-x"}]}


def gateway_config(primary: Mock, backup: Mock, **extra) -> dict:
    fast = {"connect_s": 1, "read_s": 1, "total_s": 3}
    return {
        "server": {"max_body_bytes": 64 * 1024},
        # Traces and caching have their own suites; here every request must reach a provider.
        "telemetry": {"enabled": False},
        "cache": {"enabled": False},
        "providers": {
            "primary": {"type": "openai", "base_url": f"{primary.url}/v1", "api_key": PRIMARY_KEY, "timeouts": fast},
            "backup": {"type": "anthropic", "base_url": backup.url, "api_key": BACKUP_KEY, "timeouts": fast},
            "azure": {"type": "azure", "base_url": primary.url, "api_key": PRIMARY_KEY, "api_version": "2024-10-21"},
        },
        "models": {
            "gpt": {"deployments": [{"provider": "primary", "model": "m1"}]},
            "claude": {"deployments": [{"provider": "backup", "model": "claude-x"}]},
            "chat-default": fallback_model("m1"),
            "embed": {"deployments": [{"provider": "primary", "model": "text-embed"}]},
            "azure-gpt": {"deployments": [{"provider": "azure", "model": "my-deployment"}]},
            "after-500": fallback_model("fail-500"),
            "after-429": fallback_model("fail-429"),
            "after-timeout": fallback_model("fail-timeout"),
            "after-drop": fallback_model("fail-drop"),
            "after-400": fallback_model("fail-400"),
            "after-bad-key": {"deployments": [{"provider": "azure", "model": "fail-401"},
                                              {"provider": "backup", "model": "claude-x"}]},
            "midstream": {"deployments": [{"provider": "primary", "model": "fail-midstream"},
                                          {"provider": "backup", "model": "claude-x"}]},
            "midstream-anthropic": {"deployments": [{"provider": "backup", "model": "fail-midstream"}]},
            "overloaded-first": {"deployments": [{"provider": "backup", "model": "fail-stream-error"},
                                                 {"provider": "primary", "model": "m1"}]},
            "all-down": {"deployments": [{"provider": "primary", "model": "fail-500"},
                                         {"provider": "backup", "model": "fail-503"}]},
            "all-timeout": {"deployments": [{"provider": "primary", "model": "fail-timeout"}]},
            "breaker": {"retries": 0, "deployments": [{"provider": "primary", "model": "m-breaker"},
                                                      {"provider": "backup", "model": "claude-x"}]},
        },
        "router": {"retries": 1, "backoff_base_s": 0.01, "max_retry_after_s": 2,
                   "breaker": {"failure_threshold": 3, "cooldown_s": 1.0}},
        **extra,
    }


@pytest.fixture(scope="session")
def gateway(primary, backup):
    gw = start_gateway(gateway_config(primary, backup))
    yield gw
    gw.stop()


@pytest.fixture(scope="session")
def keyed_gateway(primary, backup):
    keys = [{"key": TEAM_A_KEY, "tenant": "team-a", "models": ["gpt"]},
            {"key": TEAM_B_KEY, "tenant": "team-b"}]
    gw = start_gateway(gateway_config(primary, backup, keys=keys))
    yield gw
    gw.stop()


@pytest.fixture
def oai(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="client-key-not-forwarded", max_retries=0)


@pytest.fixture
def claude(gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key="client-key-not-forwarded", max_retries=0)
