"""The local ONNX embedder against the reference model, and the provider embedder."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import orjson
import pytest

from cache.embedders import LocalEmbedder, ProviderEmbedder


async def test_local_embedder_matches_sentence_transformers(model_cache_dir) -> None:
    st = pytest.importorskip("sentence_transformers")
    from cache.onnx_export import default_model_dir

    texts = ["How do I reset my password?", "A much longer sentence about the history of Paris and its museums.", "hi"]
    fp32 = LocalEmbedder(model_cache_dir, quantize=False)
    await fp32.start()
    try:
        ours = np.stack(await asyncio.gather(*(fp32.embed(t) for t in texts)))  # one padded batch
    finally:
        await fp32.aclose()
    reference = st.SentenceTransformer(str(default_model_dir()), device="cpu").encode(texts, normalize_embeddings=True)
    assert np.allclose((ours * reference).sum(axis=1), 1.0, atol=1e-4)


async def test_local_embedder_quality_and_limits(local_embedder) -> None:
    a = await local_embedder.embed("How do I reset my password?")
    b = await local_embedder.embed("How can I reset my password?")
    c = await local_embedder.embed("What is the boiling point of water?")
    assert a is not None and b is not None and c is not None
    assert a.dtype == np.float32 and abs(float(np.linalg.norm(a)) - 1) < 1e-5
    assert float(a @ b) > 0.9 > 0.3 > float(a @ c)
    assert await local_embedder.embed("word " * 300) is None  # past the 256-token window


async def test_concurrent_calls_are_batched(local_embedder) -> None:
    texts = [f"question {i} about the weather" for i in range(32)]
    together = await asyncio.gather(*(local_embedder.embed(t) for t in texts))
    alone = [await local_embedder.embed(t) for t in texts[:3]]
    for x, y in zip(together[:3], alone, strict=True):
        assert x is not None and y is not None and float(x @ y) > 0.99999  # same text, same vector


async def test_provider_embedder(local_embedder) -> None:
    seen: list[dict] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        seen.append({"auth": request.headers.get("authorization"), **body})
        vectors = [await local_embedder.embed(t) for t in body["input"]]
        data = [{"object": "embedding", "index": i, "embedding": (v * 3).tolist()} for i, v in enumerate(vectors)]
        return httpx.Response(200, json={"object": "list", "data": data[::-1], "model": body["model"]})

    embedder = ProviderEmbedder("http://emb/v1", "text-embed", api_key="sk", transport=httpx.MockTransport(handler))
    await embedder.start()
    try:
        assert embedder.dim == 384  # probed
        a, b = await asyncio.gather(embedder.embed("reset password"), embedder.embed("boiling water"))
        assert a is not None and b is not None
        assert abs(float(np.linalg.norm(a)) - 1) < 1e-5  # normalised
        ref = await local_embedder.embed("reset password")
        assert float(a @ ref) > 0.999  # order restored from `index`
        assert seen[-1]["auth"] == "Bearer sk" and seen[-1]["model"] == "text-embed"
        assert await embedder.embed("x" * 9000) is None
    finally:
        await embedder.aclose()


async def test_provider_embedder_errors_propagate_to_the_cache() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, json={"error": {"message": "down"}})

    embedder = ProviderEmbedder("http://emb/v1", "m", dimensions=4, transport=httpx.MockTransport(handler))
    await embedder.start()
    try:
        with pytest.raises(httpx.HTTPStatusError):
            await embedder.embed("x")
    finally:
        await embedder.aclose()


def test_first_export_logs_one_line(tmp_path):
    """The one-time ONNX export on a first start is one INFO line in the gateway's log: no
    progress bar from transformers, no per-tensor lines or image-model hint from onnxruntime."""
    import subprocess
    import sys

    script = ("import logging\n"
              "logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')\n"
              "from pathlib import Path\n"
              "from cache.onnx_export import default_model_dir, ensure_onnx\n"
              f"ensure_onnx(default_model_dir(), Path({str(tmp_path)!r}), quantize=True)\n"
              "logging.info('root still works')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 2, lines
    assert "exported the local embedding model" in lines[0] and lines[1] == "INFO root: root still works"
