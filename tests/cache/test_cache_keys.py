"""Canonical keys, directives and admission rules (pure functions)."""

from __future__ import annotations

import dataclasses

from cache import CacheConfig, CachePolicy, parse_directive
from cache.admission import refusal_reason, temperature_allowed
from cache.keys import request_keys
from tests.cache.cache_bodies import anthropic_message, chat, completion

SEMANTIC = CachePolicy()


def keys(req, policy=SEMANTIC):  # type: ignore[no-untyped-def]
    return request_keys(req, policy, "p:", "emb-1")


def test_transport_fields_do_not_change_the_key() -> None:
    base = keys(chat("q"))
    assert keys(chat("q", stream=True, stream_options={"include_usage": True}, user="u", metadata={"a": 1})) == base
    assert keys(chat("q", temperature=0.0)) == base  # 0 and 0.0


def test_output_fields_change_the_key() -> None:
    base = keys(chat("q")).exact
    for params in ({"temperature": 0.3}, {"max_tokens": 5}, {"seed": 1}, {"stop": ["\n"]}, {"n": 2},
                   {"response_format": {"type": "json_object"}}, {"tool_choice": "none"}, {"top_p": 0.5}):
        assert keys(chat("q", **params)).exact != base, params
    assert keys(chat("q", tenant="other")).exact != base
    assert keys(chat("q", policy_version="p2")).exact != base


def test_context_tag_covers_everything_but_the_embedded_text() -> None:
    a, b = keys(chat("How do I reset my password?")), keys(chat("How can I reset my password?"))
    assert a.context_tag == b.context_tag and a.exact != b.exact
    assert a.embed_text == "How do I reset my password?"
    assert keys(chat("q", system="other")).context_tag != keys(chat("q")).context_tag
    assert keys(chat("q", temperature=0.2)).context_tag != keys(chat("q")).context_tag
    other_embedder = request_keys(chat("q"), SEMANTIC, "p:", "emb-2")
    assert other_embedder.context_tag != keys(chat("q")).context_tag


def test_exact_policy_and_non_user_last_turn_are_not_semantic() -> None:
    assert keys(chat("q"), CachePolicy(mode="exact")).context_tag is None
    req = chat("q")
    req.body["messages"].append({"role": "assistant", "content": "prefill"})
    assert keys(req).context_tag is None and keys(req).exact.startswith("p:x:")
    assert keys(chat("q")).exact.startswith("p:s:")


def test_all_user_embeds_every_user_turn() -> None:
    req = chat("second")
    req.body["messages"][1:1] = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"}]
    k = keys(req, CachePolicy(embed="all_user"))
    assert k.embed_text == "first\nsecond"


def test_images_stay_in_the_context() -> None:
    def with_image(url: str):  # type: ignore[no-untyped-def]
        req = chat("What is in this picture?")
        req.body["messages"][-1]["content"] = [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": url}},
        ]
        return keys(req)

    assert with_image("http://a/1.png").context_tag != with_image("http://a/2.png").context_tag
    assert with_image("http://a/1.png").embed_text == "What is in this picture?"


def test_policy_layers() -> None:
    cfg = CacheConfig.model_validate({
        "default": {"ttl_s": 100},
        "models": {"m": {"mode": "exact", "ttl_s": 50}},
        "tenants": {"t": {"ttl_s": 10, "max_temperature": None}},
    })
    assert cfg.policy_for("x", "y").ttl_s == 100
    assert cfg.policy_for("x", "m").mode == "exact" and cfg.policy_for("x", "m").ttl_s == 50
    both = cfg.policy_for("t", "m")
    assert (both.mode, both.ttl_s, both.max_temperature) == ("exact", 10, None)


def test_config_rejects_unknown_keys() -> None:
    import pydantic
    import pytest

    with pytest.raises(pydantic.ValidationError, match="thresold"):
        CacheConfig.model_validate({"default": {"thresold": 0.5}})
    with pytest.raises(pydantic.ValidationError, match="base_url"):
        CacheConfig.model_validate({"embedder": {"type": "provider"}})


def test_directives() -> None:
    assert parse_directive(None) == parse_directive("")
    d = parse_directive("No-Cache, ttl=60")
    assert d.no_cache and not d.no_store and d.ttl_s == 60
    assert parse_directive("no-store").no_store
    assert parse_directive("ttl=abc").ttl_s is None and parse_directive("ttl=-5").ttl_s is None


def test_admission() -> None:
    assert refusal_reason(completion("ok"), "openai", "chat") is None
    assert refusal_reason(completion("o", finish_reason="length"), "openai", "chat") == "incomplete"
    assert refusal_reason(completion("", refusal="no"), "openai", "chat") == "refusal"
    assert refusal_reason({"error": {}}, "openai", "chat") == "error"
    assert refusal_reason({"type": "error", "error": {}}, "anthropic", "chat") == "error"
    assert refusal_reason(anthropic_message("ok"), "anthropic", "chat") is None
    assert refusal_reason(anthropic_message("o", "max_tokens"), "anthropic", "chat") == "incomplete"
    assert refusal_reason(anthropic_message("", "refusal"), "anthropic", "chat") == "incomplete"
    assert temperature_allowed({}, 1.0) and not temperature_allowed({"temperature": 1.2}, 1.0)
    assert temperature_allowed({"temperature": 2}, None)


def test_request_dataclass_is_plain() -> None:
    req = chat("q")
    assert dataclasses.replace(req, tenant="b").tenant == "b"


def test_lexical_guard() -> None:
    from cache.guard import same_facts

    assert same_facts("How do I reset my password?", "how can i reset my password")
    assert not same_facts("Give me reasons to learn Rust.", "Give me reasons not to learn Rust.")
    assert not same_facts("Why does my code work?", "Why doesn't my code work?")
    assert not same_facts("Set a timer for 10 minutes.", "Set a timer for 15 minutes.")
    assert not same_facts("Schedule it for Monday.", "Schedule it for Tuesday.")
    assert not same_facts("Is it safe to swim here?", "Why is it unsafe to swim here?")
    assert same_facts("Is it possible to change it?", "Can I change it?")
