"""The knowledge service's own Prometheus metrics (the gRPC ones come from fte_runtime)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

ARTICLES_WRITTEN = Counter(
    "knowledge_articles_written_total", "Article writes, by outcome (created, updated, deleted).", ["outcome"]
)
SEARCHES = Counter("knowledge_searches_total", "Searches answered.")
DEEP_PASSES = Counter(
    "knowledge_deep_reranks_total",
    "English searches re-ranked with the multilingual model too (MiniLM left them too close to call).",
)
CHUNKS_REEMBEDDED = Counter("knowledge_chunks_reembedded_total", "Chunks embedded in the background for a new model.")
CHUNKS_PENDING = Gauge("knowledge_chunks_pending_embedding", "Chunks without a vector for the current model.")
GAPS_RECORDED = Counter(
    "knowledge_gaps_recorded_total",
    "Knowledge gaps recorded, by outcome (low_confidence, no_answer_found).",
    ["outcome"],
)
