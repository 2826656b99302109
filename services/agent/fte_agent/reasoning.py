"""The reasoner as the settings configure it: the policy (language packs, the learned reader) and
the engines, in the playbook's voice."""

from __future__ import annotations

from fte_agent import packs, reader
from fte_agent.compose import Voice
from fte_agent.engines.offline import OfflineEngine
from fte_agent.policy import Policy
from fte_agent.reasoner import Engine, Reasoner
from fte_agent.settings import AgentSettings


def build_reasoner(settings: AgentSettings) -> Reasoner:
    """An incomplete language pack or playbook stops the start here."""
    language_packs = packs.require(settings.supported_languages)
    playbook = packs.playbook(settings.playbook_file)
    reading = Policy(settings.supported_languages, language_packs, reader.trained(settings.reader_cache_dir))

    def voice(language: str) -> Voice:
        return Voice(language_packs.get(language) or language_packs[packs.DEFAULT_LANGUAGE], playbook)

    offline = OfflineEngine(settings.kb_min_similarity, voice)
    engine: Engine = offline
    if settings.engine == "llm":
        # Imported only when configured: the OpenAI client is not needed by the offline engine.
        from fte_agent.engines.llm import LlmEngine

        engine = LlmEngine.from_settings(settings, playbook)
    return Reasoner(engine, offline, policy=reading, packs=language_packs, playbook=playbook)
