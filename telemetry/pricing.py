"""Model prices and the cost of one request.

Prices are USD per one million tokens. The built-in table holds list prices published by
the providers at the time of writing; operators override or extend it under
`telemetry.prices` in `sluice.yaml`, keyed `"provider_type/model"` (wins) or `"model"`.

Token convention (the gateway normalises provider usage to it): `input_tokens` counts
every prompt token *including* cached ones, `cached_tokens` is the part of it served from
the provider's prompt cache (OpenAI `prompt_tokens_details.cached_tokens`; for Anthropic
the gateway adds `cache_read_input_tokens` to `input_tokens`). Cached tokens are billed at
`cached_input` when the model has such a price, else at `input`.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field


class ModelPrice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    input: float = Field(ge=0)                 # USD per 1M prompt tokens
    output: float = Field(0.0, ge=0)           # USD per 1M completion tokens
    cached_input: float | None = Field(None, ge=0)  # USD per 1M cached prompt tokens


def _p(inp: float, out: float = 0.0, cached: float | None = None) -> ModelPrice:
    return ModelPrice(input=inp, output=out, cached_input=cached)


def builtin_prices() -> dict[str, ModelPrice]:
    """The default table (a fresh dict: callers may not mutate shared state)."""
    return {
        # OpenAI
        "gpt-4o": _p(2.50, 10.00, 1.25),
        "gpt-4o-mini": _p(0.15, 0.60, 0.075),
        "gpt-4.1": _p(2.00, 8.00, 0.50),
        "gpt-4.1-mini": _p(0.40, 1.60, 0.10),
        "gpt-4.1-nano": _p(0.10, 0.40, 0.025),
        "o3": _p(2.00, 8.00, 0.50),
        "o3-mini": _p(1.10, 4.40, 0.55),
        "o4-mini": _p(1.10, 4.40, 0.275),
        "text-embedding-3-small": _p(0.02),
        "text-embedding-3-large": _p(0.13),
        "text-embedding-ada-002": _p(0.10),
        # Anthropic (cached_input = cache reads)
        "claude-opus-4": _p(15.00, 75.00, 1.50),
        "claude-sonnet-4": _p(3.00, 15.00, 0.30),
        "claude-3-7-sonnet": _p(3.00, 15.00, 0.30),
        "claude-3-5-sonnet": _p(3.00, 15.00, 0.30),
        "claude-3-5-haiku": _p(0.80, 4.00, 0.08),
        # The project's mock upstream and test models: free, but known (cost 0, not NULL).
        "m1": _p(0.0, 0.0, 0.0),
        "claude-x": _p(0.0, 0.0, 0.0),
        "mock": _p(0.0, 0.0, 0.0),
        "mock-embed": _p(0.0),
    }


class PriceTable:
    """Resolves a (provider_type, model) pair to a price, then to a cost.

    Lookup order: exact `"provider_type/model"`, exact `"model"`, then the longest key that
    is a `-`-bounded prefix of the model, so dated snapshots such as
    `gpt-4o-mini-2024-07-18` or `claude-sonnet-4-20250514` find their family's price
    (and `gpt-4o-mini-...` never falls into `gpt-4o`). Unknown models cost `None`, not 0:
    a missing price must show as missing in reports, not as free traffic.
    """

    _MEMO_MAX = 1024  # distinct model names seen; bounded because names come from upstreams

    def __init__(self, overrides: Mapping[str, ModelPrice] | None = None) -> None:
        self._prices = builtin_prices()
        self._prices.update(overrides or {})
        # Longest first so the first prefix hit is the most specific one.
        self._by_length = sorted(self._prices, key=len, reverse=True)
        self._memo: dict[tuple[str, str], ModelPrice | None] = {}

    def lookup(self, provider_type: str, model: str) -> ModelPrice | None:
        key = (provider_type, model)
        try:
            return self._memo[key]
        except KeyError:
            pass
        price = self._resolve(provider_type, model)
        if len(self._memo) < self._MEMO_MAX:
            self._memo[key] = price
        return price

    def _resolve(self, provider_type: str, model: str) -> ModelPrice | None:
        if not model:
            return None
        for exact in (f"{provider_type}/{model}", model):
            if exact in self._prices:
                return self._prices[exact]
        qualified = f"{provider_type}/{model}"
        for name in self._by_length:
            candidate = qualified if "/" in name else model
            if candidate.startswith(name) and candidate[len(name)] == "-":
                return self._prices[name]
        return None

    def cost(
        self,
        provider_type: str,
        model: str,
        input_tokens: int | None,
        output_tokens: int | None,
        cached_tokens: int | None = 0,
    ) -> float | None:
        """USD for one request, or None when the model has no price or usage is unknown."""
        if input_tokens is None and output_tokens is None:
            return None
        price = self.lookup(provider_type, model)
        if price is None:
            return None
        inp = max(input_tokens or 0, 0)
        cached = min(max(cached_tokens or 0, 0), inp)
        cached_rate = price.input if price.cached_input is None else price.cached_input
        usd = ((inp - cached) * price.input + cached * cached_rate
               + max(output_tokens or 0, 0) * price.output) / 1_000_000
        return round(usd, 12)
