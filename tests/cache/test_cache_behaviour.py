"""The cache's promises, on both backends (real Redis 8 + RediSearch, and in-process)."""

from __future__ import annotations

import asyncio
import dataclasses

from cache import CacheRequest

from tests.cache.cache_bodies import anthropic_message, chat, completion

QUESTION = "How do I reset my password?"
PARAPHRASE = "How can I reset my password?"


async def roundtrip(cache, req: CacheRequest, response: dict) -> None:
    first = await cache.lookup(req)
    assert first.status == "miss"
    assert await cache.store(req, response, first) is True


async def test_exact_hit(make_cache) -> None:
    cache = await make_cache()
    await roundtrip(cache, chat(QUESTION), completion("Use the reset link."))
    hit = await cache.lookup(chat(QUESTION, stream=True, user="someone-else"))  # not output-relevant
    assert hit.status == "hit"
    assert hit.response == completion("Use the reset link.")


async def test_semantic_hit_on_paraphrase(make_cache) -> None:
    cache = await make_cache()
    await roundtrip(cache, chat(QUESTION), completion("Use the reset link."))
    hit = await cache.lookup(chat(PARAPHRASE))
    assert hit.status == "semantic-hit", hit
    assert hit.similarity is not None and hit.similarity >= 0.9
    assert hit.response is not None and hit.response["choices"][0]["message"]["content"] == "Use the reset link."
    assert hit.embedding is not None and len(hit.embedding) == 384


async def test_unrelated_question_misses_and_reports_nearest_similarity(make_cache) -> None:
    cache = await make_cache()
    await roundtrip(cache, chat(QUESTION), completion("Use the reset link."))
    miss = await cache.lookup(chat("How do I delete my account?"))
    assert miss.status == "miss"
    assert miss.similarity is not None and miss.similarity < 0.9
    assert miss.embed_ms > 0


async def test_no_hit_across_partitions(make_cache) -> None:
    cache = await make_cache()
    await roundtrip(cache, chat(QUESTION), completion("Use the reset link."))
    tool = {"type": "function", "function": {"name": "lookup_user", "parameters": {"type": "object"}}}
    others = {
        "tenant": chat(QUESTION, tenant="globex"),
        "model": chat(QUESTION, model="chat-large"),
        "system prompt": chat(QUESTION, system="You are a pirate."),
        "no system prompt": chat(QUESTION, system=None),
        "tools": chat(QUESTION, tools=[tool]),
        "temperature": chat(QUESTION, temperature=0.5),
        "max_tokens": chat(QUESTION, max_tokens=10),
        "policy version": chat(QUESTION, policy_version="p2"),
    }
    for what, req in others.items():
        for variant in (req, dataclasses.replace(req, body={**req.body, "messages": [
            *req.body["messages"][:-1], {"role": "user", "content": PARAPHRASE}]})):
            result = await cache.lookup(variant)
            assert result.status == "miss", f"hit across {what}: {result}"


async def test_earlier_turns_are_context(make_cache) -> None:
    cache = await make_cache()
    history = [
        {"role": "user", "content": "I use the mobile app."},
        {"role": "assistant", "content": "Noted."},
    ]
    req = chat(QUESTION)
    req.body["messages"][1:1] = history
    await roundtrip(cache, req, completion("Tap Settings, then Reset."))
    fresh = await cache.lookup(chat(PARAPHRASE))  # same question without that history
    assert fresh.status == "miss"


async def test_ttl_expiry(make_cache) -> None:
    cache = await make_cache(default={"ttl_s": 1})
    await roundtrip(cache, chat(QUESTION), completion("Use the reset link."))
    assert (await cache.lookup(chat(QUESTION))).status == "hit"
    await asyncio.sleep(1.1)
    assert (await cache.lookup(chat(QUESTION))).status == "miss"
    assert (await cache.lookup(chat(PARAPHRASE))).status == "miss"


async def test_ttl_directive_shortens_entry_life(make_cache) -> None:
    cache = await make_cache()
    req = chat(QUESTION, directive="ttl=1")
    await roundtrip(cache, req, completion("Use the reset link."))
    assert (await cache.lookup(chat(QUESTION))).status == "hit"
    await asyncio.sleep(1.1)
    assert (await cache.lookup(chat(QUESTION))).status == "miss"


async def test_no_cache_bypasses_lookup_but_stores(make_cache) -> None:
    cache = await make_cache()
    await roundtrip(cache, chat(QUESTION), completion("old answer"))
    bypass = await cache.lookup(chat(QUESTION, directive="no-cache"))
    assert bypass.status == "bypass" and bypass.response is None
    assert await cache.store(chat(QUESTION, directive="no-cache"), completion("new answer"), bypass)
    hit = await cache.lookup(chat(QUESTION))
    assert hit.response is not None and hit.response["choices"][0]["message"]["content"] == "new answer"


async def test_no_store(make_cache) -> None:
    cache = await make_cache()
    req = chat(QUESTION, directive="no-store")
    lookup = await cache.lookup(req)
    assert await cache.store(req, completion("Use the reset link."), lookup) is False
    assert (await cache.lookup(chat(QUESTION))).status == "miss"
    assert cache.counters["store_skipped_no_store"] == 1


async def test_answers_that_must_not_be_stored(make_cache) -> None:
    cache = await make_cache(default={"max_entry_bytes": 2000})
    bad = {
        "incomplete": completion("Use the", finish_reason="length"),
        "content_filter": completion("", finish_reason="content_filter"),
        "refusal": completion("", refusal="I can't help with that."),
        "error": {"error": {"message": "upstream failed", "type": "server_error"}},
        "too_large": completion("x" * 5000),
    }
    for reason, response in bad.items():
        req = chat(f"{QUESTION} ({reason})")
        assert await cache.store(req, response, await cache.lookup(req)) is False, reason
        assert (await cache.lookup(req)).status == "miss", reason
    req = chat(QUESTION)
    assert await cache.store(req, completion("fine"), await cache.lookup(req), output_filtered=True) is False
    assert (await cache.lookup(req)).status == "miss"


async def test_hot_temperature_is_not_cached(make_cache) -> None:
    cache = await make_cache(default={"max_temperature": 0.7})
    req = chat(QUESTION, temperature=0.9)
    lookup = await cache.lookup(req)
    assert lookup.status == "off"
    assert await cache.store(req, completion("creative"), lookup) is False


async def test_hits_are_not_stored_again(make_cache) -> None:
    cache = await make_cache()
    await roundtrip(cache, chat(QUESTION), completion("Use the reset link."))
    hit = await cache.lookup(chat(PARAPHRASE))
    assert hit.status == "semantic-hit"
    assert await cache.store(chat(PARAPHRASE), hit.response or {}, hit) is False


async def test_threshold_comes_from_config_only(make_cache) -> None:
    strict = await make_cache(default={"threshold": 0.999})
    await roundtrip(strict, chat(QUESTION), completion("Use the reset link."))
    assert (await strict.lookup(chat(PARAPHRASE))).status == "miss"


async def test_policy_per_model_and_tenant(make_cache) -> None:
    cache = await make_cache(
        models={"chat-large": {"mode": "exact"}},
        tenants={"no-cache-co": {"enabled": False}},
    )
    await roundtrip(cache, chat(QUESTION, model="chat-large"), completion("A"))
    assert (await cache.lookup(chat(QUESTION, model="chat-large"))).status == "hit"
    assert (await cache.lookup(chat(PARAPHRASE, model="chat-large"))).status == "miss"  # exact only
    off = await cache.lookup(chat(QUESTION, tenant="no-cache-co"))
    assert off.status == "off"


async def test_anthropic_messages(make_cache) -> None:
    cache = await make_cache()

    def messages(question: str, system: str = "Be brief.") -> CacheRequest:
        body = {
            "model": "claude",
            "max_tokens": 256,
            "system": [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": question}]}],
            "metadata": {"user_id": "u-1"},
        }
        return CacheRequest("acme", "claude", "anthropic", "chat", body, None, "p1")

    await roundtrip(cache, messages(QUESTION), anthropic_message("Use the reset link."))
    assert (await cache.lookup(messages(QUESTION))).status == "hit"
    assert (await cache.lookup(messages(PARAPHRASE))).status == "semantic-hit"
    assert (await cache.lookup(messages(PARAPHRASE, system="Be thorough."))).status == "miss"
    truncated = messages("Write a long story about a lighthouse.")
    lookup = await cache.lookup(truncated)
    assert await cache.store(truncated, anthropic_message("Once", stop_reason="max_tokens"), lookup) is False
    # The same question in OpenAI format is a different partition.
    assert (await cache.lookup(chat(QUESTION, system="Be brief."))).status == "miss"


async def test_embeddings_are_exact_only(make_cache) -> None:
    cache = await make_cache()

    def embed_req(text: str) -> CacheRequest:
        return CacheRequest("acme", "embed-small", "openai", "embeddings", {"model": "e", "input": text}, None, "")

    vector = {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
              "model": "e", "usage": {"prompt_tokens": 3, "total_tokens": 3}}
    first = await cache.lookup(embed_req(QUESTION))
    assert first.status == "miss" and first.embedding is None and first.embed_ms == 0.0
    assert await cache.store(embed_req(QUESTION), vector, first)
    assert (await cache.lookup(embed_req(QUESTION))).response == vector
    assert (await cache.lookup(embed_req(PARAPHRASE))).status == "miss"


async def test_too_long_for_the_embedder_is_exact_only(make_cache) -> None:
    cache = await make_cache()
    long_prompt = "Summarise this report. " + "The quarterly numbers were fine. " * 100
    await roundtrip(cache, chat(long_prompt + "Answer in English."), completion("Fine."))
    # Differs only past the embedder's 256-token window: must not be a semantic hit.
    assert (await cache.lookup(chat(long_prompt + "Answer in French."))).status == "miss"
    assert (await cache.lookup(chat(long_prompt + "Answer in English."))).status == "hit"


async def test_concurrent_lookups(make_cache) -> None:
    cache = await make_cache()
    await roundtrip(cache, chat(QUESTION), completion("Use the reset link."))
    results = await asyncio.gather(*(cache.lookup(chat(PARAPHRASE if i % 2 else QUESTION)) for i in range(20)))
    assert [r.status for r in results] == ["hit", "semantic-hit"] * 10


async def test_semantic_hit_needs_the_same_numbers_and_negations(make_cache) -> None:
    cache = await make_cache(default={"threshold": 0.9})
    await roundtrip(cache, chat("How much is a 5 kg parcel to ship to Canada?"), completion("12 dollars"))
    await roundtrip(cache, chat("Give me reasons to learn Rust."), completion("Speed, safety."))
    for text in ("How much is a 20 kg parcel to ship to Canada?", "Give me reasons not to learn Rust."):
        result = await cache.lookup(chat(text))
        assert result.status == "miss" and (result.similarity or 0) >= 0.9, (text, result.similarity)
    assert cache.counters["semantic_rejected_by_guard"] == 2
    assert (await cache.lookup(chat("Give me some reasons to learn Rust."))).status == "semantic-hit"
