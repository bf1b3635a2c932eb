from pathlib import Path

from gateway.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def test_example_config_is_valid():
    env = {"OPENAI_API_KEY": "sk-1", "ANTHROPIC_API_KEY": "sk-2", "AZURE_OPENAI_KEY": "k",
           "TEAM_A_KEY": "a", "TEAM_B_KEY": "b"}
    cfg = load_config(ROOT / "examples" / "sluice.yaml", env=env)
    assert cfg.models["chat-default"].deployments[2].priority == 1
    assert cfg.cache.redis_url == "redis://localhost:6379/0"
    assert cfg.telemetry.clickhouse_url.startswith("http://")


def test_cache_is_off_unless_configured_but_on_in_the_quick_start():
    from gateway.config import parse_config
    from gateway.defaults import config_from_env_keys, mock_config

    assert parse_config({}, {}).cache.enabled is False
    assert mock_config(9).cache.enabled is True
    assert config_from_env_keys({"OPENAI_API_KEY": "sk-x"}).cache.enabled is True
