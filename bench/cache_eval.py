"""Evaluate the semantic cache: decision quality on labelled pairs, and lookup latency.

    .venv/bin/python -m bench.cache_eval [--sizes 10000,100000] [--queries 500]

1. Quality: every pair in bench/data/paraphrase_pairs.jsonl is embedded by the local
   embedder (int8 and fp32 ONNX); a pair "hits" at threshold t when cosine >= t.
   Hit rate = hits among paraphrases; false-hit rate = hits among non-paraphrases
   (same topic / negation / other entity / other number), per kind too.
2. Latency: a real Redis 8 + RediSearch (HNSW) is filled with N entries in ONE partition
   (the worst case for the tag filter: every entry matches it), then ResponseCache.lookup()
   runs end to end (exact GET, embed, KNN) for the held-out prompts; p50/p99 of the whole
   lookup and of the embedding alone. The embedded store is measured the same way.
   Filler vectors are real prompt embeddings plus noise (cosine ~0.6-0.8 to their source),
   so the index sees clustered data, not uniform noise.
Writes a markdown report to stdout and JSON to bench/results/cache_eval.json.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import numpy as np
import orjson

from cache import CacheConfig, CachePolicy, CacheRequest, ResponseCache
from cache.embedders import LocalEmbedder
from cache.guard import same_facts
from cache.keys import request_keys
from cache.stores import EmbeddedStore, Entry, Partition, RedisStore

ROOT = Path(__file__).resolve().parents[1]
PAIRS = ROOT / "bench" / "data" / "paraphrase_pairs.jsonl"
THRESHOLDS = [0.80, 0.84, 0.86, 0.88, 0.90, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98]


def load_pairs() -> list[dict]:
    return [orjson.loads(line) for line in PAIRS.read_bytes().splitlines() if line.strip()]


def quality(pairs: list[dict], embedder: LocalEmbedder) -> dict:
    texts = sorted({p["a"] for p in pairs} | {p["b"] for p in pairs})
    vectors = dict(zip(texts, embedder.embed_sync(texts), strict=True))
    sims = np.array([float(vectors[p["a"]] @ vectors[p["b"]]) for p in pairs])
    guard = np.array([same_facts(p["b"], p["a"]) for p in pairs])
    labels = np.array([p["label"] for p in pairs])
    kinds = np.array([p["kind"] for p in pairs])
    rows = []
    for t, guarded in [(t, g) for g in (False, True) for t in THRESHOLDS]:
        hit = (sims >= t) & (guard | (not guarded))
        row = {
            "threshold": t,
            "guard": guarded,
            "hit_rate": float(hit[labels == 1].mean()),
            "false_hit_rate": float(hit[labels == 0].mean()),
            "false_hits": int(hit[labels == 0].sum()),
        }
        for kind in ("topic", "negation", "entity", "number"):
            row[f"fh_{kind}"] = int(hit[kinds == kind].sum())
        rows.append(row)
    worst = sorted(
        ({"sim": round(float(s), 3), "a": p["a"], "b": p["b"], "kind": p["kind"]}
         for s, p, g in zip(sims, pairs, guard, strict=True) if p["label"] == 0 and g),
        key=lambda r: -r["sim"],
    )[:8]
    missed = sorted(
        ({"sim": round(float(s), 3), "a": p["a"], "b": p["b"], "guard": bool(g)}
         for s, p, g in zip(sims, pairs, guard, strict=True) if p["label"] == 1),
        key=lambda r: r["sim"],
    )[:5]
    return {"n_paraphrase": int((labels == 1).sum()), "n_other": int((labels == 0).sum()), "rows": rows,
            "hardest_negatives": worst, "hardest_paraphrases": missed}


def choose_threshold(rows: list[dict]) -> float:
    """The lowest threshold with false-hit rate below 1% (a lower one hits more)."""
    ok = [r["threshold"] for r in rows if r["guard"] and r["false_hit_rate"] < 0.01]
    return min(ok) if ok else max(THRESHOLDS)


def request(text: str) -> CacheRequest:
    body = {"model": "m", "messages": [{"role": "system", "content": "You are helpful."},
                                       {"role": "user", "content": text}], "temperature": 0}
    return CacheRequest("bench-tenant", "m", "openai", "chat", body, None, "v1")


def answer(i: int) -> bytes:
    return orjson.dumps({"id": f"c{i}", "object": "chat.completion", "created": 0, "model": "m",
                         "choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": f"answer {i} " * 20}}],
                         "usage": {"prompt_tokens": 10, "completion_tokens": 40, "total_tokens": 50}})


async def fill(store, partition: Partition, seeds: np.ndarray, n: int, ttl_s: int) -> float:
    rng = np.random.default_rng(7)
    started = time.perf_counter()
    chunk = 64  # concurrent puts: within the client pool
    for start in range(0, n, chunk):
        count = min(chunk, n - start)
        base = seeds[rng.integers(0, len(seeds), count)]
        noise = rng.standard_normal(base.shape).astype(np.float32) * 0.045
        vectors = base + noise
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        await asyncio.gather(*(
            store.put(Entry(f"{prefix_of(store)}s:fill:{start + i}", answer(start + i), ttl_s, vectors[i], partition))
            for i in range(count)
        ))
    return time.perf_counter() - started


def prefix_of(store) -> str:  # noqa: ANN001
    return getattr(store, "_prefix", "bench:")


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


async def latency(store_kind: str, size: int, embedder: LocalEmbedder, seeds: np.ndarray, queries: list[str],
                  redis_url: str | None) -> dict:
    tag = f"{store_kind}{size}-{time.monotonic_ns() % 10**8}"
    cfg = CacheConfig(index_name=f"bench-{tag}", key_prefix=f"bench:{tag}:", embedded_max_entries=size + 1000,
                      embedded_max_bytes=2 * 1024**3, default=CachePolicy(ttl_s=3600))
    if store_kind == "redis":
        store = RedisStore(redis_url or "", cfg.index_name, cfg.key_prefix, timeout_s=5.0)
    else:
        store = EmbeddedStore(cfg.embedded_max_entries, cfg.embedded_max_bytes)
    cache = ResponseCache(cfg, store, embedder)
    await cache.start()
    keys = request_keys(request("x"), cfg.default, cfg.key_prefix, embedder.name)
    assert keys.context_tag is not None
    partition = Partition(keys.tenant_tag, keys.model_tag, keys.context_tag)
    fill_s = await fill(store, partition, seeds, size, 3600)
    for q in queries[:20]:  # warm-up
        await cache.lookup(request(q))
    total, embed, statuses = [], [], {}
    for q in queries:
        started = time.perf_counter()
        result = await cache.lookup(request(q))
        total.append((time.perf_counter() - started) * 1000)
        embed.append(result.embed_ms)
        statuses[result.status] = statuses.get(result.status, 0) + 1
    exact_req = request(queries[0])
    await cache.store(exact_req, orjson.loads(answer(0)), await cache.lookup(exact_req))
    exact = []
    for _ in range(200):
        started = time.perf_counter()
        assert (await cache.lookup(exact_req)).status == "hit"
        exact.append((time.perf_counter() - started) * 1000)
    if store_kind == "redis":
        await store._client.execute_command("FT.DROPINDEX", cfg.index_name, "DD")  # free the server's memory
    await store.aclose()
    return {
        "store": store_kind, "entries": size, "fill_s": round(fill_s, 1), "queries": len(queries),
        "lookup_p50_ms": round(pct(total, 50), 2), "lookup_p99_ms": round(pct(total, 99), 2),
        "embed_p50_ms": round(pct(embed, 50), 2), "embed_p99_ms": round(pct(embed, 99), 2),
        "exact_hit_p50_ms": round(pct(exact, 50), 3), "exact_hit_p99_ms": round(pct(exact, 99), 3),
        "statuses": statuses,
    }


def markdown(report: dict) -> str:
    out = []
    for variant in ("int8", "fp32"):
        q = report["quality"][variant]
        out.append(f"\n### Decision quality, {variant} embedder ({q['n_paraphrase']} paraphrase pairs, "
                   f"{q['n_other']} hard non-paraphrases)\n")
        out.append("| threshold | lexical guard | hit rate | false-hit rate | false hits (topic/negation/entity/number) |")
        out.append("| --- | --- | --- | --- | --- |")
        for r in q["rows"]:
            out.append(f"| {r['threshold']:.2f} | {'yes' if r['guard'] else 'no'} | {r['hit_rate']:.1%} | "
                       f"{r['false_hit_rate']:.1%} | "
                       f"{r['false_hits']} ({r['fh_topic']}/{r['fh_negation']}/{r['fh_entity']}/{r['fh_number']}) |")
        out.append(f"\nChosen threshold ({variant}): **{q['chosen']:.2f}**")
    out.append("\n### Lookup latency (ResponseCache.lookup end to end, one partition holding every entry)\n")
    out.append("| store | entries | lookup p50 | lookup p99 | embed p50 | embed p99 | exact hit p50 / p99 | fill |")
    out.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in report["latency"]:
        out.append(f"| {r['store']} | {r['entries']:,} | {r['lookup_p50_ms']} ms | {r['lookup_p99_ms']} ms | "
                   f"{r['embed_p50_ms']} ms | {r['embed_p99_ms']} ms | {r['exact_hit_p50_ms']} / "
                   f"{r['exact_hit_p99_ms']} ms | {r['fill_s']} s |")
    return "\n".join(out)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--embedded-sizes", default="10000")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--redis-url", default=None, help="default: start a local Redis 8 + RediSearch")
    parser.add_argument("--data-dir", default=str(ROOT / ".sluice"))
    args = parser.parse_args()

    pairs = load_pairs()
    models = Path(args.data_dir) / "models"
    report: dict = {"quality": {}, "latency": []}
    embedders = {}
    for variant, quantize in (("int8", True), ("fp32", False)):
        embedder = LocalEmbedder(models, quantize=quantize)
        await embedder.start()
        q = quality(pairs, embedder)
        q["chosen"] = choose_threshold(q["rows"])
        report["quality"][variant] = q
        embedders[variant] = embedder

    embedder = embedders["int8"]
    await embedders["fp32"].aclose()
    prompts = sorted({p["a"] for p in pairs})
    seeds = np.stack([v for v in embedder.embed_sync(prompts) if v is not None])
    queries = [p["b"] for p in pairs]
    queries = (queries * (args.queries // len(queries) + 1))[: args.queries]
    queries = [f"{q}" if i < len(pairs) else f"{q} (variant {i})" for i, q in enumerate(queries)]

    server = None
    redis_url = args.redis_url
    if redis_url is None and args.sizes:
        import sys

        sys.path.insert(0, str(ROOT))
        from tests.redis_server import start_redis

        server = start_redis(with_search=True)
        redis_url = server.url
    try:
        for size in [int(s) for s in args.sizes.split(",") if s]:
            report["latency"].append(await latency("redis", size, embedder, seeds, queries, redis_url))
            print(report["latency"][-1], flush=True)
        for size in [int(s) for s in args.embedded_sizes.split(",") if s]:
            report["latency"].append(await latency("embedded", size, embedder, seeds, queries, None))
            print(report["latency"][-1], flush=True)
    finally:
        if server is not None:
            server.stop()
        await embedder.aclose()

    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "cache_eval.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(markdown(report))
    for variant in ("int8",):
        print("\nhardest non-paraphrases:", *report["quality"][variant]["hardest_negatives"], sep="\n  ")
        print("hardest paraphrases:", *report["quality"][variant]["hardest_paraphrases"], sep="\n  ")


if __name__ == "__main__":
    asyncio.run(main())
