"""What a request will use, before it is sent (reserved), and what it used (settled).

Prompt tokens are counted locally with a fixed rule, not a tokenizer: one token per 3
bytes of UTF-8 text (English averages about 4 with OpenAI's and Anthropic's tokenizers,
code about 3, so the rule errs high), plus 4 per message, a flat 1,000 for an image or
audio part, and the serialised size of tools and tool calls by the same rule. It costs a
walk over the messages (~1-3 µs for a short chat), where a real tokenizer costs
milliseconds on long prompts and needs its vocabulary downloaded. The error does not
last: settlement replaces the estimate by the provider's usage.

Output tokens are the request's own cap (`max_tokens`, `max_completion_tokens`,
`max_output_tokens`, times `n`), else `limits.default_max_tokens`, never above the
model's `max_output_tokens`. The estimated cost prices both at the most expensive
deployment of the public model (the request may fall back to any of them).

Settled figures: the provider's usage when the answer reported it; for a stream cut
before its usage arrived, the prompt estimate plus the text relayed so far by the same
rule; for an answer whose usage the gateway cannot read (a passed-through Responses
stream), the estimate itself; nothing when no provider answered (a cache hit, a refusal,
every deployment failed).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

from gateway.quota.model import Estimate

if TYPE_CHECKING:
    from gateway.context import RequestContext
    from gateway.routing import ModelRoute
    from telemetry import Telemetry

log = logging.getLogger("sluice.quota")

BYTES_PER_TOKEN = 3
PER_MESSAGE = 4
MEDIA_TOKENS = 1000
_MEDIA = frozenset({"image_url", "image", "input_image", "input_audio", "audio", "document", "file",
                    "input_file"})


def _text_tokens(s: str) -> int:
    n = len(s) if s.isascii() else len(s.encode("utf-8"))
    return (n + BYTES_PER_TOKEN - 1) // BYTES_PER_TOKEN


def _json_tokens(value: Any) -> int:
    try:
        return (len(orjson.dumps(value)) + BYTES_PER_TOKEN - 1) // BYTES_PER_TOKEN
    except (TypeError, orjson.JSONEncodeError):
        return 0


def _content_tokens(content: Any) -> int:
    if content.__class__ is str:
        return _text_tokens(content)
    if isinstance(content, list):
        total = 0
        for part in content:
            if isinstance(part, dict):
                text = part.get("text")
                if text.__class__ is str:
                    total += _text_tokens(text)
                elif part.get("type") in _MEDIA:
                    total += MEDIA_TOKENS
                else:                                  # tool_use, tool_result, anything else
                    total += _json_tokens(part)
            elif part.__class__ is str:
                total += _text_tokens(part)
        return total
    if content is None:
        return 0
    return _json_tokens(content)


def prompt_tokens(body: Mapping[str, Any], operation: str) -> int:
    """The local prompt-token estimate of a request body (any of the four endpoints)."""
    if operation == "embeddings":
        inp = body.get("input")
        if inp.__class__ is str:
            return _text_tokens(inp)
        if isinstance(inp, list):
            total = 0
            for item in inp:
                if item.__class__ is str:
                    total += _text_tokens(item)
                elif item.__class__ is int:
                    total += 1
                elif isinstance(item, list):
                    total += len(item)                 # token ids
            return total
        return 0
    total = 0
    messages = body.get("messages")
    if operation == "responses":
        total += _content_tokens(body.get("input")) + _content_tokens(body.get("instructions"))
    elif isinstance(messages, list):
        for m in messages:
            if isinstance(m, dict):
                total += PER_MESSAGE + _content_tokens(m.get("content"))
                calls = m.get("tool_calls")
                if calls:
                    total += _json_tokens(calls)
    system = body.get("system")                        # Anthropic
    if system is not None:
        total += _content_tokens(system)
    tools = body.get("tools")
    if tools:
        total += _json_tokens(tools)
    return total


def output_tokens(body: Mapping[str, Any], operation: str, default: int, cap: int | None) -> int:
    """The most output the request may produce, as far as the gateway can tell."""
    if operation == "embeddings":
        return 0
    asked = None
    for name in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = body.get(name)
        if value.__class__ is int and value > 0:
            asked = value
            break
    out = asked if asked is not None else default
    if cap is not None and out > cap:
        out = cap
    n = body.get("n")
    if n.__class__ is int and n > 1:
        out *= n
    return out


def text_tokens(text: str) -> int:
    return _text_tokens(text) if text else 0


class Estimator:
    """Estimates (prices memoised per public model) and settled figures."""

    def __init__(self, telemetry: Telemetry, default_max_tokens: int, output_caps: Mapping[str, int]) -> None:
        self._telemetry = telemetry
        self._default = default_max_tokens
        self._caps = output_caps
        self._route_prices: dict[str, tuple[int, int]] = {}
        self._unpriced_logged: set[str] = set()

    def estimate(self, ctx: RequestContext, route: ModelRoute, body: Mapping[str, Any]) -> Estimate:
        op = ctx.endpoint.operation              # a str enum: compares equal to its value
        prompt = prompt_tokens(body, op)
        out = output_tokens(body, op, self._default, self._caps.get(ctx.public_model))
        price = self._route_prices.get(route.name)
        if price is None:
            price = self._route_prices[route.name] = self._price(route)
        return Estimate(prompt, out, prompt * price[0] + out * price[1])

    def _price(self, route: ModelRoute) -> tuple[int, int]:
        """Nano-USD per input and per output token at the dearest deployment of the route."""
        best_in = best_out = 0.0
        for dep in route.deployments:
            price = self._telemetry.prices.lookup(dep.provider_type, dep.upstream_model)
            if price is None:
                if dep.name not in self._unpriced_logged:
                    self._unpriced_logged.add(dep.name)
                    log.warning("limits: deployment %s (%s) has no price: budgets count its requests as free "
                                "(telemetry.prices can give it one)", dep.name, dep.upstream_model)
                continue
            best_in = max(best_in, price.input)
            best_out = max(best_out, price.output)
        # USD per 1M tokens -> nano-USD per token: x 1e9 / 1e6
        return round(best_in * 1000), round(best_out * 1000)

    def actual(self, ctx: RequestContext, estimate: Estimate, priced: bool = True) -> tuple[int, int]:
        """(tokens, nano-USD) the request used, by the rules in the module docstring;
        the cost as telemetry computes it (`PriceTable.cost`), only when `priced`."""
        dep = ctx.deployment
        if dep is None:
            return 0, 0
        s = ctx.summary
        usage = s.usage
        inp, out, cached = usage.input_tokens, usage.output_tokens, usage.cached_tokens
        text = s.text_parts
        if not inp and not out:
            if not text:
                return estimate.tokens, estimate.nano_usd        # usage unknown: the estimate stands
            inp = estimate.prompt_tokens                          # a stream cut before its usage
        if not out and text:
            out = text_tokens("".join(text))
        if not priced:
            return inp + out, 0
        prices = self._telemetry.prices
        try:
            price = prices.lookup(dep.provider_type, s.response_model) if s.response_model else None
            if price is None:
                price = prices.lookup(dep.provider_type, dep.upstream_model)
            if price is None:
                return inp + out, 0
            inp, out, cached = max(int(inp), 0), max(int(out), 0), max(int(cached or 0), 0)
        except (TypeError, ValueError):
            return estimate.tokens, estimate.nano_usd            # a provider's odd usage: the estimate
        cached = min(cached, inp)
        cached_rate = price.input if price.cached_input is None else price.cached_input
        # USD per 1M tokens x tokens -> nano-USD: x 1e9 / 1e6
        return inp + out, round(((inp - cached) * price.input + cached * cached_rate + out * price.output) * 1000)
