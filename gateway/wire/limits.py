"""How much one request may ask for: nesting depth, messages, choices, output tokens.

Each limit is a 400 in the caller's wire format naming the field and the limit, checked
before the request reaches a guardrail, the cache or a provider. Without them a 2 KB body
nested 300 deep was a 500 (orjson parses 1024 levels but writes 254, and the cache key's
recursion logged a 158 KB traceback), 200,000 messages went upstream, and `max_tokens`
2**62 or -1 were the provider's problem after a retry and a fallback.

The defaults (`server:` and `models.<name>.max_output_tokens` in gateway/config.py):

- `max_json_depth` 64: a chat body with tool schemas at OpenAI's ten levels of schema
  nesting is about 35 deep (body, tools, function, parameters, then properties + schema
  per level); 64 leaves room and stays far below the 254 that orjson can write back.
- `max_messages` 2048: OpenAI's own limit on `messages`; Anthropic's is higher, but a
  conversation of more than 2048 turns is an agent loop gone wrong far more often than a
  real prompt, and the operator can raise it.
- `max_n` 16: `n` multiplies the cost and the size of one answer (and what the gateway
  holds of it) while rate limits and budgets see one request. Best-of-n and
  self-consistency sampling use 3-10; OpenAI's 128 is a provider's limit, not a sane one
  for a shared gateway, and the operator can raise it up to that.
- output tokens: no model emits 2**31 tokens, so that is the ceiling for any model; a
  model's `max_output_tokens` lowers it for that model. Values below 1 are refused, as
  both providers do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.errors import BadRequest

if TYPE_CHECKING:
    from gateway.config import SluiceConfig

OUTPUT_TOKENS_CEILING = 2**31 - 1
_CONTAINERS = (dict, list)


@dataclass(frozen=True, slots=True)
class RequestLimits:
    max_json_depth: int = 64
    max_messages: int = 2048
    max_n: int = 16
    model_output_tokens: Mapping[str, int] = field(default_factory=dict)   # public model -> cap

    @classmethod
    def from_config(cls, cfg: SluiceConfig) -> RequestLimits:
        server = cfg.server
        caps = {name: m.max_output_tokens for name, m in cfg.models.items() if m.max_output_tokens is not None}
        return cls(server.max_json_depth, server.max_messages, server.max_n, caps)


def nesting_within(raw: bytes, body: Any, limit: int) -> bool:
    """Whether `body` (parsed from `raw`) nests at most `limit` levels (the body itself is 1).

    A body cannot nest deeper than it has `{` and `[` (brackets inside strings only add to
    the count), so nearly every request is settled by two byte counts at C speed, about a
    microsecond for 2 KB. Only a body with more brackets than the limit is walked: level
    by level, no recursion, stopping at the first level past the limit.
    """
    if raw.count(b"{") + raw.count(b"[") <= limit:
        return True
    level: list[Any] = [body]
    for _ in range(limit):
        level = [value for node in level for value in (node.values() if type(node) is dict else node)
                 if type(value) in _CONTAINERS]
        if not level:
            return True
    return False


def check_count(items: list[Any], name: str, limits: RequestLimits) -> None:
    if len(items) > limits.max_messages:
        raise BadRequest(f"Invalid '{name}': {len(items)} items is more than the limit of {limits.max_messages}",
                         param=name)


def check_n(value: int | None, limits: RequestLimits) -> None:
    if value is not None and not 1 <= value <= limits.max_n:
        raise BadRequest(f"Invalid 'n': expected an integer between 1 and {limits.max_n} "
                         f"(the limit of this gateway), got {value}", param="n")


def check_output_tokens(value: int | None, name: str, model: str, limits: RequestLimits) -> None:
    """`value` is already known to be an int (or None: not given)."""
    if value is None:
        return
    if value < 1:
        raise BadRequest(f"Invalid '{name}': expected an integer of at least 1, got {value}", param=name)
    cap = limits.model_output_tokens.get(model)
    if cap is not None and value > cap:
        raise BadRequest(f"Invalid '{name}': {value} is more than the limit of {cap} for model '{model}'",
                         param=name)
    if value > OUTPUT_TOKENS_CEILING:
        raise BadRequest(f"Invalid '{name}': {value} is more than the limit of {OUTPUT_TOKENS_CEILING}",
                         param=name)
