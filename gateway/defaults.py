"""The configuration `sluice serve` uses when it is given none.

Provider keys in the environment (OPENAI_API_KEY, ANTHROPIC_API_KEY) give a gateway in
front of the real APIs; with neither, the built-in mock provider answers, so the quick
start works on a machine with no network and no keys.
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
import os
import socket
import threading
from pathlib import Path

from gateway.config import SluiceConfig, load_config, parse_config

logger = logging.getLogger("sluice")

CONFIG_CANDIDATES = ("sluice.yaml", "sluice.yml")


def find_config_file(explicit: str | None) -> Path | None:
    if explicit:
        return Path(explicit)
    if os.environ.get("SLUICE_CONFIG"):
        return Path(os.environ["SLUICE_CONFIG"])
    for name in CONFIG_CANDIDATES:
        if Path(name).is_file():
            return Path(name)
    return None


def config_from_env_keys(env: dict[str, str]) -> SluiceConfig | None:
    providers: dict = {}
    models: dict = {}
    if env.get("OPENAI_API_KEY"):
        providers["openai"] = {"type": "openai", "base_url": env.get("OPENAI_BASE_URL", "https://api.openai.com/v1"),
                               "api_key": env["OPENAI_API_KEY"]}
        for m in ("gpt-4o-mini", "gpt-4o", "gpt-4.1", "gpt-4.1-mini", "text-embedding-3-small"):
            models[m] = {"deployments": [{"provider": "openai", "model": m}]}
    if env.get("ANTHROPIC_API_KEY"):
        providers["anthropic"] = {"type": "anthropic", "base_url": "https://api.anthropic.com",
                                  "api_key": env["ANTHROPIC_API_KEY"]}
        for m in ("claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1"):
            models[m] = {"deployments": [{"provider": "anthropic", "model": m}]}
    if not providers:
        return None
    return parse_config({"providers": providers, "models": models, "cache": {"enabled": True}}, env)


def mock_config(mock_port: int) -> SluiceConfig:
    base = f"http://127.0.0.1:{mock_port}"
    return parse_config({
        "providers": {
            "mock-openai": {"type": "openai", "base_url": f"{base}/v1", "api_key": "sk-mock"},
            "mock-anthropic": {"type": "anthropic", "base_url": base, "api_key": "sk-ant-mock"},
        },
        "models": {
            "mock-gpt": {"deployments": [{"provider": "mock-openai", "model": "mock-gpt"}]},
            "mock-claude": {"deployments": [{"provider": "mock-anthropic", "model": "mock-claude"}]},
            "mock-embed": {"deployments": [{"provider": "mock-openai", "model": "mock-embed"}]},
            "chat-default": {"strategy": "fallback", "deployments": [
                {"provider": "mock-openai", "model": "mock-gpt"},
                {"provider": "mock-anthropic", "model": "mock-claude"},
            ]},
        },
        # The embedded defaults show every feature: traces in chDB and the in-process cache
        # are on by default; PII masking (when Presidio is installed) and injection flagging.
        "cache": {"enabled": True},
        "guardrails": {"default": {**({"pii": {"input_action": "mask"}} if _installed("presidio_analyzer") else {}),
                                   "injection": {"action": "flag"}, "fail": "open"}},
    }, {})


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_mock_in_thread(port: int) -> None:
    from gateway.mock import MockOptions
    from gateway.mock.server import mock_server
    server = mock_server("127.0.0.1", port, MockOptions())
    thread = threading.Thread(target=server.run, name="sluice-mock-upstream", daemon=True)
    thread.start()

    def stop() -> None:
        # Stopped before the interpreter finalizes: a uvloop timer firing in a still-running
        # daemon thread after that takes the GIL of a gone interpreter (SIGSEGV at exit).
        server.should_exit = True
        thread.join(timeout=5)
    atexit.register(stop)


def resolve_config(path: str | None, quiet: bool = False) -> SluiceConfig:
    """The config file if there is one, else provider keys from the environment, else the mock."""
    file = find_config_file(path)
    if file is not None:
        cfg = load_config(file)
        logger.info("loaded configuration from %s", file)
        return cfg
    if quiet:   # commands that only read telemetry need no providers
        return config_from_env_keys(dict(os.environ)) or mock_config(0)
    cfg = config_from_env_keys(dict(os.environ))
    if cfg is not None:
        logger.info("no config file: using provider keys from the environment (%s)", ", ".join(cfg.providers))
        return cfg
    port = _free_port()
    _start_mock_in_thread(port)
    logger.warning("no config file and no provider keys: serving the built-in MOCK provider on 127.0.0.1:%d "
                   "(models: mock-gpt, mock-claude, mock-embed, chat-default). Answers are fake.", port)
    return mock_config(port)
