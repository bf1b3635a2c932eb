"""The evaluators' calls to a model: through the gateway's own HTTP API, like any client.

Authenticated with `monitoring.evaluator_key`, so the gateway neither caches these calls
nor counts them against any limit or budget, and stores them as `traffic = 'evaluator'`
(gateway/auth.py). Each call carries the evaluator span's `traceparent`, so the re-asked
request's trace is a child of the evaluation (which links to the evaluated trace). The
cost of a call is priced here from the usage the gateway returns (telemetry/pricing.py,
with `monitoring.evaluators.prices` on top): the daily budgets are counted from it.
Blocking (httpx.Client): the monitor job runs in its own thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from telemetry.pricing import ModelPrice, PriceTable


class EvaluatorCallError(RuntimeError):
    """A call the gateway refused or could not answer (the message has no key in it)."""


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float


class GatewayModels:
    def __init__(self, base_url: str, key: str | None, *, prices: Mapping[str, ModelPrice] | None = None,
                 timeout_s: float = 60.0, transport: httpx.BaseTransport | None = None) -> None:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        headers["user-agent"] = "sluice-evaluator"
        self._client = httpx.Client(base_url=base_url, headers=headers, timeout=timeout_s, transport=transport)
        self._prices = PriceTable(prices or {})

    def chat(self, model: str, messages: list[dict[str, Any]], *, temperature: float | None = None,
             max_tokens: int | None = None, seed: int | None = None,
             headers: Mapping[str, str] | None = None) -> Completion:
        body: dict[str, Any] = {"model": model, "messages": messages}
        if temperature is not None:
            body["temperature"] = temperature
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if seed is not None:
            body["seed"] = seed
        try:
            response = self._client.post("/v1/chat/completions", json=body, headers=dict(headers or {}))
        except httpx.HTTPError as exc:
            raise EvaluatorCallError(f"gateway unreachable: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise EvaluatorCallError(f"gateway answered {response.status_code}: {response.text[:200]}")
        data = response.json()
        choice = (data.get("choices") or [{}])[0]
        text = ((choice.get("message") or {}).get("content")) or ""
        usage = data.get("usage") or {}
        tokens_in, tokens_out = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        price = self._prices.lookup("", model) or self._prices.lookup("", str(data.get("model") or ""))
        cost = 0.0 if price is None else (tokens_in * price.input + tokens_out * price.output) / 1e6
        return Completion(text, str(data.get("model") or model), tokens_in, tokens_out, cost)

    def close(self) -> None:
        self._client.close()
