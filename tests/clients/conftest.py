"""Third-party clients against a real Sluice in front of the mock providers.

Each public model exists twice: once on a deployment of the client's own wire format
(passed through) and once on the other format (translated), so every client is checked
both ways:

    openai-native     OpenAI-type deployment          (OpenAI callers: pass-through)
    anthropic-native  Anthropic-type deployment       (Anthropic callers: pass-through)
    embed             OpenAI-type embeddings deployment

An OpenAI-format client on `anthropic-native` is translated, and an Anthropic-format
client on `openai-native` is translated. `CLIENT_MODELS` names both for a parametrize.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import BACKUP_KEY, PRIMARY_KEY, Mock
from tests.gateway_server import RunningGateway, start_gateway

CLIENT_KEY = "sluice-clients-key"
OPENAI_NATIVE = "openai-native"
ANTHROPIC_NATIVE = "anthropic-native"
EMBED = "embed"
CLIENT_MODELS = (OPENAI_NATIVE, ANTHROPIC_NATIVE)

# The clients must not reach the internet: no tracing or telemetry export, no download of
# litellm's cost map. Set before any client is imported (some read these at import time).
OFFLINE_ENV = {
    "OPENAI_AGENTS_DISABLE_TRACING": "1",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LANGCHAIN_TRACING_V2": "false",
    "LANGSMITH_TRACING": "false",
    "DO_NOT_TRACK": "1",
}
for _name, _value in OFFLINE_ENV.items():
    os.environ.setdefault(_name, _value)


def clients_config(primary: Mock, backup: Mock) -> dict:
    timeouts = {"connect_s": 2, "read_s": 10, "total_s": 30}
    return {
        "telemetry": {"enabled": False},
        "cache": {"enabled": False},
        "providers": {
            "oai": {"type": "openai", "base_url": f"{primary.url}/v1", "api_key": PRIMARY_KEY, "timeouts": timeouts},
            "ant": {"type": "anthropic", "base_url": backup.url, "api_key": BACKUP_KEY, "timeouts": timeouts},
        },
        "models": {
            OPENAI_NATIVE: {"deployments": [{"provider": "oai", "model": "gpt-upstream"}]},
            ANTHROPIC_NATIVE: {"deployments": [{"provider": "ant", "model": "claude-upstream"}]},
            EMBED: {"deployments": [{"provider": "oai", "model": "text-embedding-upstream"}]},
        },
        "keys": [{"key": CLIENT_KEY, "tenant": "clients"}],
    }


@pytest.fixture(scope="session")
def clients_gateway(primary: Mock, backup: Mock) -> Iterator[RunningGateway]:
    gw = start_gateway(clients_config(primary, backup))
    yield gw
    gw.stop()


@pytest.fixture
def upstream(model: str, primary: Mock, backup: Mock) -> Mock:
    """The mock provider behind the parametrized `model`: its `requests()` show what reached it."""
    return primary if model in (OPENAI_NATIVE, EMBED) else backup


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any connection a client tries outside this machine (telemetry, a hub download),
    instead of letting it hang or pass unnoticed when the network is there."""
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex

    def check(address: Any) -> None:
        host = address[0] if isinstance(address, tuple) else None
        if host is None:
            return                                   # AF_UNIX paths are local
        try:
            local = ipaddress.ip_address(host.split("%")[0]).is_loopback
        except ValueError:
            local = host == "localhost"
        if not local:
            raise ConnectionRefusedError(f"client suite: connection to {address!r} outside loopback refused")

    def connect(self: socket.socket, address: Any) -> None:
        check(address)
        return original_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check(address)
        return original_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
