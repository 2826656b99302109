"""Background re-embedding: after the model changes, every chunk gets a vector for the new model.

Search only ever uses vectors of the current model, so until this finishes, chunks without one
are not found by the vector ranker (the full-text ranker still sees them once they have one).
"""

from __future__ import annotations

import asyncio
import logging

from fte_knowledge.crosslingual import lead
from fte_knowledge.metrics import CHUNKS_PENDING, CHUNKS_REEMBEDDED
from fte_knowledge.service import KnowledgeBase

log = logging.getLogger("fte.knowledge.reembed")


async def reembed_pending(kb: KnowledgeBase) -> int:
    """Embeds every chunk lacking a vector for the current model; returns how many were stored.
    Then each chunk's other vectors (`embed_views`). Vectors of other models are pruned at the
    end when configured."""
    total = 0
    batch = kb.settings.reembed_batch_size
    while True:
        pending = await kb.store.chunks_without(kb.model, batch)
        if not pending:
            break
        vectors = await kb.embedder.embed([text for _, text in pending])
        stored = await kb.store.add_embeddings([cid for cid, _ in pending], vectors, kb.model)
        total += stored
        CHUNKS_REEMBEDDED.inc(stored)
        if len(pending) < batch:
            break
    views = await embed_views(kb)
    CHUNKS_PENDING.set(0)
    if total or views:
        log.info("chunks re-embedded", extra={"model": kb.model.name, "chunks": total, "other_vectors": views})
    if kb.settings.prune_other_models:
        pruned = await kb.store.prune_other_models(kb.model, [kb.cross_model] if kb.cross_model else [])
        if pruned:
            log.info("vectors of other models pruned", extra={"vectors": pruned})
    return total


async def embed_views(kb: KnowledgeBase) -> int:
    """Cross-lingual vectors (when enabled) for chunks lacking one: each chunk's heading path and
    first words (see `crosslingual.lead`); equal texts of one batch are embedded once."""
    if kb.cross is None or kb.cross_model is None:
        return 0
    total = 0
    batch = kb.settings.reembed_batch_size
    while True:
        pending = [(cid, lead(text)) for cid, text in await kb.store.chunks_without(kb.cross_model, batch)]
        if not pending:
            return total
        distinct = list(dict.fromkeys(text for _, text in pending))
        vectors = dict(zip(distinct, await kb.cross.passages(distinct), strict=True))
        total += await kb.store.add_embeddings(
            [cid for cid, _ in pending], [vectors[t] for _, t in pending], kb.cross_model
        )
        if len(pending) < batch:
            return total


async def run_reembedder(kb: KnowledgeBase) -> None:
    """Runs until cancelled: catches up, then checks again every `reembed_idle_seconds`."""
    while True:
        try:
            await reembed_pending(kb)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("re-embedding failed; retrying later")
        await asyncio.sleep(kb.settings.reembed_idle_seconds)
