"""The agent's one settings class (env prefix FTE_AGENT_)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from fte_runtime import topics
from fte_runtime.settings import DatabaseSettings, GrpcServerSettings, KafkaSettings
from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict


class AgentSettings(GrpcServerSettings, DatabaseSettings, KafkaSettings):
    model_config = SettingsConfigDict(env_prefix="FTE_AGENT_", extra="ignore", frozen=True)

    grpc_port: Annotated[int, Field(ge=0, le=65535)] = 50054

    # Downstream services (through Envoy in the mesh) and the agent's own bearer token for them.
    knowledge_target: str = "127.0.0.1:9000"
    identity_target: str = "127.0.0.1:9000"
    notifier_target: str = "127.0.0.1:9000"
    service_token: SecretStr = SecretStr("")

    # Worker.
    consumer_group: str = "fte-agent"
    # The topics followed (tests and side-by-side deployments point these elsewhere).
    incoming_topic: str = topics.TICKETS_INCOMING
    outcomes_topic: str = topics.DELIVERY_OUTCOMES
    customers_topic: str = topics.CUSTOMERS_CHANGED
    # Records handled at once, across customers (one waiting for its customer's earlier record
    # or pace takes no slot); records fetched and not done, fetching waits above it; one
    # customer's records fetched and not done, above which their partition is paused.
    max_in_flight: Annotated[int, Field(ge=1)] = 256
    max_buffered: Annotated[int, Field(ge=1)] = 4096
    max_per_customer: Annotated[int, Field(ge=1)] = 64
    # Per-customer pace: a burst of `rate_burst` messages, then `rate_per_minute` a minute.
    rate_burst: Annotated[int, Field(ge=1)] = 5
    rate_per_minute: Annotated[float, Field(gt=0)] = 5.0
    # Attempts of an unexpected (non-transient) failure before the record is dead-lettered.
    max_attempts: Annotated[int, Field(ge=1)] = 5
    # A conversation idle longer than this is closed; the next message starts a new one.
    conversation_idle_hours: Annotated[float, Field(gt=0)] = 24.0

    # Reasoning: "offline" (default, no credentials) or "llm" (an OpenAI-compatible endpoint).
    engine: Literal["offline", "llm"] = "offline"
    supported_languages: tuple[str, ...] = ("en", "es", "de")
    # Cosine similarity (question vs passage) a passage needs to be answered from.
    kb_min_similarity: Annotated[float, Field(ge=-1, le=1)] = 0.35
    # The deployment's voice (company, product, signature, tone, hours, follow-up promise): a TOML
    # file like fte_agent/data/playbook.toml, which is the default.
    playbook_file: Path | None = None
    # Where the reader keeps the embeddings of its training corpus (computed once, about a minute
    # of CPU; `python -m fte_agent train` fills it). Unset: computed at every start.
    reader_cache_dir: Path | None = None
    openai_base_url: str | None = None
    openai_api_key: SecretStr = SecretStr("")
    openai_model: str = "gpt-4o-mini"
    openai_timeout_seconds: Annotated[float, Field(gt=0)] = 20.0
    openai_max_steps: Annotated[int, Field(ge=1, le=20)] = 6

    # Knowledge gaps: an answer whose best passage similarity is below kb_min_similarity plus this
    # margin is recorded (with no_answer_found escalations) by KnowledgeService.RecordKnowledgeGap.
    kb_gap_margin: Annotated[float, Field(ge=0, le=2)] = 0.1
