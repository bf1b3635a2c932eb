"""Text -> unit vector, off the event loop.

`LocalEmbedder`: all-MiniLM-L6-v2 on CPU through onnxruntime (offline), mean pooling and
L2 norm in numpy, one worker thread, concurrent calls coalesced into batches.
`ProviderEmbedder`: any OpenAI-type `/embeddings` endpoint over httpx.

`embed()` returns None when the text cannot be embedded faithfully (longer than the model
sees): two long prompts that differ only past the truncation point would otherwise look
identical, so such requests are cached exactly only.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import httpx
import numpy as np

from .batching import MicroBatcher
from .config import EmbedderConfig
from .onnx_export import default_model_dir, ensure_onnx, model_fingerprint

Vector = np.ndarray  # float32, shape (dim,), unit norm


class Embedder(Protocol):
    name: str  # identifies the vector space; part of the semantic context hash
    dim: int

    async def start(self) -> None: ...
    async def embed(self, text: str) -> Vector | None: ...
    async def aclose(self) -> None: ...


def _normalise(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return (rows / np.maximum(norms, 1e-12)).astype(np.float32)


class LocalEmbedder:
    def __init__(
        self,
        cache_dir: Path,
        model_dir: Path | None = None,
        quantize: bool = True,
        max_batch: int = 16,
        max_tokens: int = 256,  # all-MiniLM-L6-v2 was trained on 256-token inputs
    ) -> None:
        self._model_dir = model_dir or default_model_dir()
        self._cache_dir = cache_dir
        self._quantize = quantize
        self._max_tokens = max_tokens
        self.name = f"local:{model_fingerprint(self._model_dir)}:{'int8' if quantize else 'fp32'}"
        self.dim = 0
        # One thread: the model is CPU bound and the machine is shared; batching provides throughput.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sluice-embed")
        self._batcher: MicroBatcher[Vector | None] = MicroBatcher(self._run_batch, max_batch)
        self._session: Any = None
        self._tokenizer: Any = None

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._load)

    def _load(self) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        path = ensure_onnx(self._model_dir, self._cache_dir, self._quantize)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        tokenizer = Tokenizer.from_file(str(self._model_dir / "tokenizer.json"))
        tokenizer.enable_truncation(max_length=self._max_tokens)
        tokenizer.enable_padding()
        self._tokenizer = tokenizer
        self.dim = int(self.embed_sync(["dimension probe"])[0].shape[0])  # type: ignore[union-attr]

    def embed_sync(self, texts: list[str]) -> list[Vector | None]:
        """Blocking: call from a worker thread (the bench calls it directly).

        The int8 model quantizes activations dynamically over the whole input tensor, so a
        text's vector would depend on the other texts (and padding) in its batch: measured
        cosine 0.994 between batched and alone, enough to flip a decision at the threshold.
        A cache must embed the same text to the same vector, so int8 runs one text per
        session call (still one thread hop per batch); fp32 batches are exact.
        """
        if self._quantize and len(texts) > 1:
            return [v for text in texts for v in self._embed_padded([text])]
        return self._embed_padded(texts)

    def _embed_padded(self, texts: list[str]) -> list[Vector | None]:
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        (hidden,) = self._session.run(
            None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        )
        weights = mask[..., None].astype(np.float32)
        pooled = _normalise((hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9))
        return [None if e.overflowing else pooled[i] for i, e in enumerate(encodings)]

    async def _run_batch(self, texts: list[str]) -> list[Vector | None]:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.embed_sync, texts)

    async def embed(self, text: str) -> Vector | None:
        return await self._batcher.submit(text)

    async def aclose(self) -> None:
        await self._batcher.aclose()
        self._executor.shutdown(wait=False, cancel_futures=True)


class ProviderEmbedder:
    """POST {base_url}/embeddings {"model", "input": [...]}, the OpenAI wire format."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        dimensions: int | None = None,
        timeout_s: float = 5.0,
        max_batch: int = 16,
        max_chars: int = 8000,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._url = base_url.rstrip("/") + "/embeddings"
        self._model = model
        self._headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout_s = timeout_s
        self._max_chars = max_chars
        self._transport = transport
        self.name = f"provider:{base_url.rstrip('/')}:{model}"
        self.dim = dimensions or 0
        self._client: httpx.AsyncClient | None = None
        self._batcher: MicroBatcher[Vector] = MicroBatcher(self._run_batch, max_batch)

    async def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=self._timeout_s, transport=self._transport)
        if not self.dim:
            self.dim = int((await self._run_batch(["dimension probe"]))[0].shape[0])

    async def _run_batch(self, texts: list[str]) -> list[Vector]:
        assert self._client is not None, "ProviderEmbedder.start() was not awaited"
        response = await self._client.post(
            self._url, json={"model": self._model, "input": texts}, headers=self._headers
        )
        response.raise_for_status()
        data = sorted(response.json()["data"], key=lambda d: d["index"])
        rows = _normalise(np.asarray([d["embedding"] for d in data], dtype=np.float32))
        if len(rows) != len(texts) or (self.dim and rows.shape[1] != self.dim):
            raise ValueError(f"embeddings endpoint returned {rows.shape}, expected ({len(texts)}, {self.dim})")
        return list(rows)

    async def embed(self, text: str) -> Vector | None:
        if len(text) > self._max_chars:
            return None
        return await self._batcher.submit(text)

    async def aclose(self) -> None:
        await self._batcher.aclose()
        if self._client is not None:
            await self._client.aclose()


def build_embedder(cfg: EmbedderConfig, data_dir: Path) -> Embedder:
    if cfg.type == "provider":
        assert cfg.base_url and cfg.model  # checked by EmbedderConfig
        return ProviderEmbedder(
            cfg.base_url, cfg.model, cfg.api_key, cfg.dimensions, cfg.timeout_s, cfg.max_batch
        )
    model_dir = Path(cfg.model_dir) if cfg.model_dir else None
    return LocalEmbedder(data_dir / "models", model_dir, cfg.quantize, cfg.max_batch)
