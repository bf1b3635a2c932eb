"""Cost arithmetic against the price table, and config validation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from telemetry import ModelPrice, PriceTable, TelemetryConfig


def test_cost_splits_cached_and_uncached_input():
    prices = PriceTable()
    # gpt-4o: 2.50 in, 10.00 out, 1.25 cached, per 1M tokens.
    cost = prices.cost("openai", "gpt-4o", input_tokens=1000, output_tokens=200, cached_tokens=400)
    assert cost == pytest.approx((600 * 2.50 + 400 * 1.25 + 200 * 10.00) / 1e6)
    assert cost == pytest.approx(0.004)


@pytest.mark.parametrize(("provider", "model", "inp", "out", "expected"), [
    ("openai", "gpt-4o-mini", 1_000_000, 1_000_000, 0.15 + 0.60),
    ("openai", "gpt-4.1", 500_000, 100_000, 1.00 + 0.80),
    ("openai", "gpt-4.1-mini", 10_000, 0, 0.004),
    ("openai", "o3-mini", 1000, 1000, (1000 * 1.10 + 1000 * 4.40) / 1e6),
    ("anthropic", "claude-sonnet-4", 2000, 1000, (2000 * 3 + 1000 * 15) / 1e6),
    ("anthropic", "claude-3-5-haiku", 1_000_000, 0, 0.80),
    ("openai", "text-embedding-3-small", 1_000_000, 0, 0.02),
])
def test_builtin_prices(provider, model, inp, out, expected):
    assert PriceTable().cost(provider, model, inp, out) == pytest.approx(expected)


def test_dated_snapshots_find_their_family_not_a_shorter_one():
    prices = PriceTable()
    mini = prices.lookup("openai", "gpt-4o-mini")
    assert prices.lookup("openai", "gpt-4o-mini-2024-07-18") == mini
    assert prices.lookup("openai", "gpt-4o-2024-08-06") == prices.lookup("openai", "gpt-4o")
    assert prices.lookup("anthropic", "claude-sonnet-4-20250514").input == 3.00
    # "gpt-4o" must not match "gpt-4oz": the prefix must end at a "-".
    assert prices.lookup("openai", "gpt-4oz") is None


def test_unknown_model_costs_none_not_zero_and_mock_models_cost_zero():
    prices = PriceTable()
    assert prices.cost("openai", "some-new-model", 100, 100) is None
    assert prices.cost("openai", "m1", 100, 100) == 0.0
    assert prices.cost("anthropic", "claude-x", 100, 100) == 0.0
    assert prices.cost("openai", "gpt-4o", None, None) is None      # usage unknown


def test_config_overrides_and_provider_qualified_keys():
    prices = PriceTable({
        "azure/gpt-4o": ModelPrice(input=5.0, output=15.0),
        "my-model": ModelPrice(input=1.0, output=2.0),
    })
    assert prices.cost("azure", "gpt-4o", 1_000_000, 0) == pytest.approx(5.0)
    assert prices.cost("openai", "gpt-4o", 1_000_000, 0) == pytest.approx(2.5)
    # No cached price: cached tokens are billed at the input price.
    assert prices.cost("openai", "my-model", 1_000_000, 1_000_000, 500_000) == pytest.approx(3.0)


def test_cached_tokens_never_exceed_input():
    assert PriceTable().cost("openai", "gpt-4o", 100, 0, 500) == pytest.approx(100 * 1.25 / 1e6)


def test_config_rejects_unknown_keys_and_bad_urls():
    with pytest.raises(ValidationError, match="log_prompt"):
        TelemetryConfig.model_validate({"log_prompt": False})
    with pytest.raises(ValidationError, match="clickhouse_url"):
        TelemetryConfig.model_validate({"clickhouse_url": "tcp://ch:9000"})
    with pytest.raises(ValidationError, match="prices"):
        TelemetryConfig.model_validate({"prices": {"gpt-4o": {"input": -1}}})
    cfg = TelemetryConfig.model_validate({
        "log_prompts": True, "max_text_chars": 100,
        "tenants": {"bank": {"log_prompts": False}, "short": {"max_text_chars": 5}},
    })
    assert cfg.text_policy("bank") == (False, 100)
    assert cfg.text_policy("short") == (True, 5)
    assert cfg.text_policy("other") == (True, 100)
