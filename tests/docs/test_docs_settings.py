"""Every setting a service reads is documented: its own in `services/<svc>/README.md`, the
shared ones (fte_runtime.settings) in the root README."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fte_agent.settings import AgentSettings
from fte_console.settings import ConsoleSettings
from fte_gateway.settings import GatewaySettings
from fte_identity.settings import IdentitySettings
from fte_knowledge.settings import KnowledgeSettings
from fte_mcp.settings import McpSettings
from fte_notifier.settings import NotifierSettings
from fte_runtime import settings as runtime_settings
from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parents[2]
SERVICES: dict[str, type[BaseSettings]] = {
    "agent": AgentSettings,
    "console": ConsoleSettings,
    "gateway": GatewaySettings,
    "identity": IdentitySettings,
    "knowledge": KnowledgeSettings,
    "mcp": McpSettings,
    "notifier": NotifierSettings,
}
SHARED = {
    name
    for base in (
        runtime_settings.BaseServiceSettings,
        runtime_settings.AuthTokensSettings,
        runtime_settings.GrpcServerSettings,
        runtime_settings.DatabaseSettings,
        runtime_settings.KafkaSettings,
    )
    for name in base.model_fields
}


def documented(text: str, field: str) -> bool:
    if re.search(rf"(?<![A-Z0-9_]){field.upper()}(?![A-Z0-9_])", text):
        return True
    # A secret's mounted-file twin, where the README says secrets are also read as `*_FILE`.
    return field.endswith("_file") and "`*_FILE`" in text and documented(text, field.removesuffix("_file"))


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_setting_of_a_service_is_in_its_readme(service: str) -> None:
    readme = (ROOT / "services" / service / "README.md").read_text(encoding="utf-8")
    root = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [
        field
        for field in SERVICES[service].model_fields
        if not documented(readme, field) and not (field in SHARED and documented(root, field))
    ]
    assert not missing, f"services/{service}/README.md does not mention: {', '.join(f.upper() for f in missing)}"
