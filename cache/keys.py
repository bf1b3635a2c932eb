"""Canonical request keys: what makes two requests "the same" for the cache.

Exact key: a hash of the canonical JSON of every output-relevant field, with tenant, public
model, wire format, operation and guardrail policy version folded in. Fields that cannot
change the answer (user, stream, stream_options, metadata, provider prompt-cache hints) are
dropped, so a streaming and a non-streaming call share one entry.

Semantic partition: the request split in two. The *embedded text* (last user turn, or all
user turns) is compared by embedding; *everything else* (system prompt, earlier turns,
tools, sampling parameters, images, policy version, wire format, embedder) is hashed into
the context tag, so a semantic hit is only ever an answer to a request that differs in the
wording of the embedded text and nothing else.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from .config import CachePolicy
from .request import CacheRequest

# Fields that never change the answer. Everything not listed here is part of the key, so a
# new upstream parameter is safe by default (it splits the cache instead of merging answers).
_IGNORED_FIELDS = frozenset(
    {
        "model",  # replaced by the public model name the gateway resolved
        "stream",
        "stream_options",
        "user",
        "metadata",
        "store",
        "service_tier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "safety_identifier",
    }
)
_FLOAT_FIELDS = frozenset({"temperature", "top_p", "top_k", "frequency_penalty", "presence_penalty"})
_EMBEDDED = "\x00embedded\x00"  # stands in for embedded text inside the context hash


@dataclass(frozen=True)
class RequestKeys:
    exact: str  # the Redis/LRU key of the exact entry
    tenant_tag: str
    model_tag: str
    context_tag: str | None  # None: this request cannot be looked up semantically
    embed_text: str | None


def _digest(value: Any) -> str:
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _short(value: str) -> str:
    # Tags are hex so that no tenant or model name ever needs escaping in a RediSearch query.
    return hashlib.sha256(value.encode()).hexdigest()[:24]


def _strip_cache_control(value: Any) -> Any:
    """Anthropic `cache_control` marks are billing hints, not content."""
    if isinstance(value, dict):
        return {k: _strip_cache_control(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_strip_cache_control(v) for v in value]
    return value


def canonical_body(body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in body.items():
        if key in _IGNORED_FIELDS or value is None:
            continue
        if key in _FLOAT_FIELDS and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # temperature 1 and 1.0 are the same request
        out[key] = _strip_cache_control(value)
    return out


def _split_content(content: Any) -> tuple[str | None, Any]:
    """(text, the non-text remainder). None text: nothing embeddable in this message."""
    if isinstance(content, str):
        return content, None
    if isinstance(content, list):
        texts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        rest = [p for p in content if not (isinstance(p, dict) and p.get("type") == "text")]
        return ("\n".join(texts) if texts else None), (rest or None)
    return None, content


def _semantic_split(body: dict[str, Any], embed: str) -> tuple[str | None, dict[str, Any]]:
    """Return (text to embed, body with that text replaced by a marker)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return None, body
    last = messages[-1]
    # The question being answered must be the last turn: after a tool result or an assistant
    # prefill the answer depends on more than the user's wording.
    if not isinstance(last, dict) or last.get("role") != "user":
        return None, body
    indices = [len(messages) - 1] if embed == "last_user" else [
        i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "user"
    ]
    texts: list[str] = []
    rewritten = list(messages)
    for i in indices:
        text, rest = _split_content(messages[i].get("content"))
        if text is None:
            if i == len(messages) - 1:
                return None, body
            continue
        texts.append(text)
        rewritten[i] = {**messages[i], "content": [_EMBEDDED, rest]}
    text = "\n".join(texts).strip()
    if not text:
        return None, body
    return text, {**body, "messages": rewritten}


def request_keys(req: CacheRequest, policy: CachePolicy, key_prefix: str, embedder_id: str) -> RequestKeys:
    body = canonical_body(req.body)
    scope = {
        "tenant": req.tenant,
        "model": req.public_model,
        "format": req.api_format,
        "op": req.operation,
        "policy": req.policy_version,
    }
    tenant_tag = _short(req.tenant)
    context_tag = embed_text = None
    if policy.mode == "semantic" and req.operation == "chat":
        embed_text, context = _semantic_split(body, policy.embed)
        if embed_text is not None:
            context_tag = _digest({**scope, "body": context, "embed": policy.embed, "embedder": embedder_id})[:32]
    # "s:" entries carry a vector and live under the vector index's prefix; "x:" entries are
    # exact-only. Which one a request uses depends only on the request and its policy.
    kind = "s" if context_tag else "x"
    exact = f"{key_prefix}{kind}:{tenant_tag}:{_digest({**scope, 'body': body})}"
    return RequestKeys(
        exact=exact,
        tenant_tag=tenant_tag,
        model_tag=_short(req.public_model),
        context_tag=context_tag,
        embed_text=embed_text,
    )
