"""The dev overlay's token files are what the services accept: every grant parses (scopes, and a
rate limit where one is given) and no principal's tokens disagree on its limit."""

from __future__ import annotations

from pathlib import Path

import pytest
from fte_runtime.auth import principal_rate_limits
from fte_runtime.settings import GrpcServerSettings

SECRETS = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "overlays" / "dev" / "secrets"


@pytest.mark.parametrize("path", sorted(SECRETS.glob("*-tokens.json")), ids=lambda p: p.name)
def test_a_token_file_loads_as_the_services_load_it(path: Path) -> None:
    settings = GrpcServerSettings(auth_tokens_file=path)
    assert settings.auth_tokens
    assert all(grant.scopes for grant in settings.auth_tokens.values()), "a grant without scopes can call nothing"
    limits = principal_rate_limits(settings.auth_tokens)
    assert "agent" not in limits, "the agent is never rate limited"


def test_internal_teams_are_rate_limited_in_the_dev_overlay() -> None:
    limits = principal_rate_limits(GrpcServerSettings(auth_tokens_file=SECRETS / "knowledge-tokens.json").auth_tokens)
    assert limits == {"kb-reader": (600.0, 60)}
