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
