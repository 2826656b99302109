"""What re-ranking reads of a candidate article (its sections and every chunk's vectors), kept
in the process by the article's content hash.

Without it every search fetched each candidate's whole body and all its chunk vectors from
Postgres and parsed the body into sections again: the largest share of a search's database
time. An entry is used only while the article's content hash (returned with every hit) is the
one it was read with, so an article changed by any replica is read again on its next search;
an entry without cross-lingual vectors (they are computed in the background after a write) is
read again when a search needs them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fte_knowledge.rerank import Matrix, Section, article_sections, section_index
from fte_knowledge.store import Store, VectorModel


@dataclass(frozen=True, slots=True)
class Material:
    content_hash: str
    title: str
    language: str
    sections: list[Section]
    chunk_sections: list[int]  # section index of each chunk vector
    vectors: Matrix  # (chunks, dimension) for the search's model
    cross_vectors: Matrix | None  # the same chunks for the cross-lingual model, when all have one


class MaterialCache:
    """Up to `size` articles' material, least recently used dropped first."""

    def __init__(self, store: Store, model: VectorModel, cross_model: VectorModel | None, size: int) -> None:
        self._store = store
        self._model = model
        self._cross_model = cross_model
        self._size = size
        self._entries: OrderedDict[str, Material] = OrderedDict()
        self.reads = 0  # articles read from the database, for tests and metrics

    async def get(self, hashes: Mapping[str, str], *, with_cross: bool) -> dict[str, Material]:
        """The material of each article in `hashes` (slug -> the content hash its hit carried);
        an article deleted meanwhile is left out."""
        stale = [slug for slug, content_hash in hashes.items() if not self._fresh(slug, content_hash, with_cross)]
        read: dict[str, Material] = {}
        if stale:
            cross = self._cross_model if with_cross else None
            read = _build(await self._store.candidate_material(stale, self._model, cross), with_cross=with_cross)
            self.reads += len(stale)
        out: dict[str, Material] = {}
        for slug in hashes:
            entry = read.get(slug) if slug in read or slug in stale else self._entries.get(slug)
            if entry is not None:
                out[slug] = entry
                self._put(slug, entry)
        return out

    def _fresh(self, slug: str, content_hash: str, with_cross: bool) -> bool:
        entry = self._entries.get(slug)
        return (
            entry is not None
            and entry.content_hash == content_hash
            and (not with_cross or entry.cross_vectors is not None)
        )

    def _put(self, slug: str, material: Material) -> None:
        if self._size == 0:
            return
        self._entries[slug] = material
        self._entries.move_to_end(slug)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)


def _build(rows: Sequence[Any], *, with_cross: bool) -> dict[str, Material]:
    grouped: dict[str, list[Any]] = {}
    for row in rows:
        grouped.setdefault(row["slug"], []).append(row)
    out: dict[str, Material] = {}
    for slug, chunk_rows in grouped.items():
        first = chunk_rows[0]
        sections = article_sections(first["title"], first["body"] or "")
        cross_rows = [r["cross_vector"] for r in chunk_rows]
        out[slug] = Material(
            content_hash=first["content_hash"],
            title=first["title"],
            language=first["language"],
            sections=sections,
            chunk_sections=[section_index(sections, r["heading"]) for r in chunk_rows],
            vectors=np.stack([_array(r["vector"]) for r in chunk_rows]),
            cross_vectors=np.stack([_array(v) for v in cross_rows])
            if with_cross and all(v is not None for v in cross_rows)
            else None,
        )
    return out


def _array(value: Any) -> Matrix:
    """A stored vector (pgvector's `Vector`, or an array) as float32."""
    array = value.to_numpy() if hasattr(value, "to_numpy") else value
    return np.asarray(array, dtype=np.float32)
