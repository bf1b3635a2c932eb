import pytest

from gateway.config import ConfigError, load_config, parse_config

ISSUE_EXAMPLE = """
providers:
  primary:   {type: openai, base_url: "http://127.0.0.1:9001/v1", api_key: "${PRIMARY_KEY}"}
  backup:    {type: anthropic, base_url: "http://127.0.0.1:9002", api_key: "sk-ant-test"}
models:
  chat-default:
    strategy: fallback
    deployments:
      - {provider: primary, model: m1}
      - {provider: backup, model: claude-x}
keys:
  - {key: "${TEAM_A_KEY}", tenant: team-a, models: [chat-default]}
"""


def test_issue_example_loads_with_env(tmp_path):
    path = tmp_path / "sluice.yaml"
    path.write_text(ISSUE_EXAMPLE)
    cfg = load_config(path, env={"PRIMARY_KEY": "sk-primary", "TEAM_A_KEY": "team-a-secret"})
    assert cfg.providers["primary"].api_key == "sk-primary"
    assert cfg.providers["backup"].type == "anthropic"
    deps = cfg.models["chat-default"].deployments
    assert [(d.provider, d.model) for d in deps] == [("primary", "m1"), ("backup", "claude-x")]
    assert cfg.models["chat-default"].strategy == "fallback"
    assert cfg.keys[0].tenant == "team-a" and cfg.keys[0].models == ["chat-default"]


def test_missing_env_var_names_the_key(tmp_path):
    path = tmp_path / "sluice.yaml"
    path.write_text(ISSUE_EXAMPLE)
    with pytest.raises(ConfigError, match=r"providers\.primary\.api_key: environment variable PRIMARY_KEY"):
        load_config(path, env={"TEAM_A_KEY": "x"})


def test_env_default():
    cfg = parse_config({"providers": {"p": {"type": "openai", "base_url": "${URL:-http://localhost:1/v1}"}}}, {})
    assert cfg.providers["p"].base_url == "http://localhost:1/v1"


@pytest.mark.parametrize("raw, message", [
    ({"providers": {"p": {"type": "openai", "base_url": "http://x"}},
      "models": {"m": {"deployments": [{"provider": "anthropc", "model": "x"}]}}},
     r"models\.m\.deployments\[0\]\.provider: unknown provider 'anthropc'"),
    ({"providers": {"p": {"type": "grpc", "base_url": "http://x"}}}, r"providers\.p\.type"),
    ({"providers": {"p": {"type": "openai", "base_url": "ftp://x"}}}, r"providers\.p\.base_url"),
    ({"models": {"m": {"strategy": "random", "deployments": [{"provider": "p", "model": "x"}]}}},
     r"models\.m\.strategy"),
    ({"models": {"m": {"deployments": []}}}, r"models\.m\.deployments"),
    ({"provders": {}}, r"provders: Extra inputs are not permitted"),
    ({"providers": {"p": {"type": "openai", "base_url": "http://x", "timeouts": {"read_s": -1}}}},
     r"providers\.p\.timeouts\.read_s"),
])
def test_invalid_config_names_the_key(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(raw, {})


def test_bad_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("providers: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
