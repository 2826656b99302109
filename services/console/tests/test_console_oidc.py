"""OIDC sign-in against a small local provider served over HTTP by the test (discovery document,
JWKS of locally generated keys, an authorize endpoint that redirects back with a code, a token
endpoint that checks the client secret and the PKCE verifier and issues a signed ID token), so
authlib's real code runs in a console process of its own. Sign-in works; a wrong state, a wrong
nonce, a token signed with another key, an expired token, an unverified email and an unknown email
are each refused; the password form is off."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import secrets
import sys
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fte_stack.fakes._http import LocalHttpServer
from fte_stack.procs import Child, free_port
from fte_stack.stack import Stack
from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from test_console_stack import PASSWORD  # type: ignore[import-not-found]

pytestmark = pytest.mark.kafka
CLIENT_ID = "fte-console"
CLIENT_SECRET = "console-oidc-test-secret"


@dataclass
class Tweaks:
    """How the provider misbehaves on the next sign-in."""

    state: str | None = None  # redirect back with this state instead of the one sent
    nonce: str | None = None  # put this nonce in the ID token
    other_key: bool = False  # sign with a key that is not in the JWKS (same key id)
    expired: bool = False
    email_verified: bool = True


@dataclass
class FakeProvider:
    """A minimal OpenID provider: just what an authorization-code sign-in with PKCE touches."""

    email: str = ""
    tweaks: Tweaks = field(default_factory=Tweaks)
    key: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": "k1"}, private=True))
    stranger: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": "k1"}, private=True))
    codes: dict[str, dict[str, str]] = field(default_factory=dict)
    server: LocalHttpServer | None = None

    @property
    def issuer(self) -> str:
        assert self.server is not None
        return self.server.url.rstrip("/")

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self.discovery),
                Route("/jwks", self.jwks),
                Route("/authorize", self.authorize),
                Route("/token", self.token, methods=["POST"]),
            ]
        )

    async def discovery(self, request: Request) -> Response:
        return JSONResponse(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token",
                "jwks_uri": f"{self.issuer}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic"],
            }
        )

    async def jwks(self, request: Request) -> Response:
        return JSONResponse({"keys": [self.key.as_dict(private=False)]})

    async def authorize(self, request: Request) -> Response:
        q = request.query_params
        assert q["response_type"] == "code"
        assert q["client_id"] == CLIENT_ID
        assert "openid" in q["scope"].split()
        assert q["code_challenge_method"] == "S256"
        code = secrets.token_urlsafe(16)
        self.codes[code] = {k: q[k] for k in ("redirect_uri", "nonce", "code_challenge")}
        state = self.tweaks.state if self.tweaks.state is not None else q["state"]
        back = f"{q['redirect_uri']}?{urllib.parse.urlencode({'code': code, 'state': state})}"
        return RedirectResponse(back, status_code=302)

    async def token(self, request: Request) -> Response:
        expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {expected}":
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        form = await request.form()
        grant = self.codes.pop(str(form.get("code", "")), None)
        if grant is None or form.get("grant_type") != "authorization_code":
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        verifier = str(form.get("code_verifier", ""))
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if challenge != grant["code_challenge"] or form.get("redirect_uri") != grant["redirect_uri"]:
            return JSONResponse({"error": "invalid_grant", "error_description": "PKCE"}, status_code=400)
        now = int(time.time()) - (7200 if self.tweaks.expired else 0)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": f"user-{uuid.uuid4().hex[:8]}",
            "aud": CLIENT_ID,
            "iat": now,
            "exp": now + 600,
            "nonce": self.tweaks.nonce if self.tweaks.nonce is not None else grant["nonce"],
            "email": self.email,
            "email_verified": self.tweaks.email_verified,
        }
        signer = self.stranger if self.tweaks.other_key else self.key
        id_token = jwt.encode({"alg": "RS256", "kid": "k1"}, claims, signer)
        return JSONResponse(
            {"access_token": secrets.token_urlsafe(16), "token_type": "Bearer", "expires_in": 600, "id_token": id_token}
        )


@pytest.fixture
async def provider() -> AsyncIterator[FakeProvider]:
    fake = FakeProvider()
    fake.server = LocalHttpServer(fake.app())
    await fake.server.start()
    yield fake
    await fake.server.stop()


@contextlib.asynccontextmanager
async def console_process(stack: Stack, provider: FakeProvider, log: Path, **settings: str) -> AsyncIterator[str]:
    """A console process of its own, on the stack's database and mesh, with OIDC sign-in."""
    port = free_port()
    env = {
        **stack.children["console"].env,
        "FTE_CONSOLE_HTTP_PORT": str(port),
        "FTE_CONSOLE_OIDC_ISSUER": provider.issuer,
        "FTE_CONSOLE_OIDC_CLIENT_ID": CLIENT_ID,
        "FTE_CONSOLE_OIDC_CLIENT_SECRET": CLIENT_SECRET,
        **{f"FTE_CONSOLE_{k.upper()}": v for k, v in settings.items()},
    }
    child = Child("console-oidc", [sys.executable, "-m", "fte_console", "serve"], log, env)
    await child.start()
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=2) as http, asyncio.timeout(60):
            while True:
                assert child.running, child.tail()
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)
        yield base
    finally:
        await child.stop()


@pytest.fixture
async def console(full_stack: Stack, provider: FakeProvider, tmp_path: Path) -> AsyncIterator[str]:
    async with console_process(full_stack, provider, tmp_path / "console.log", password_sign_in="false") as base:
        yield base


async def add_staff(stack: Stack, username: str, email: str, role: str = "agent") -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fte_console", "users", "add", username, "--role", role, "--email", email,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**stack.children["console"].env},
    )  # fmt: skip
    _, err = await proc.communicate((PASSWORD + "\n").encode())
    assert proc.returncode == 0, err.decode()


async def sign_in(http: httpx.AsyncClient, base: str, provider: FakeProvider, email: str) -> httpx.Response:
    """Follows the sign-in as a browser would: to the provider, back with the code; the last answer."""
    provider.email = email
    start = await http.get(f"{base}/login/oidc")
    assert start.status_code == 303, start.text
    flow = next(c for c in start.headers.get_list("set-cookie") if c.startswith("fte_console_oidc="))
    assert "HttpOnly" in flow
    assert "SameSite=lax" in flow
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(start.headers["location"]).query)
    assert query["code_challenge_method"] == ["S256"]
    assert query["state"][0]
    assert query["nonce"][0]
    at_provider = await http.get(start.headers["location"])
    assert at_provider.status_code == 302
    return await http.get(at_provider.headers["location"])


async def test_oidc_sign_in_maps_a_verified_email_to_its_account_and_refuses_the_rest(
    full_stack: Stack, provider: FakeProvider, console: str
) -> None:
    name = f"sso-{uuid.uuid4().hex[:8]}"
    email = f"{name}@staff.example"
    await add_staff(full_stack, name, email)

    async with httpx.AsyncClient(base_url=console) as anonymous:
        login = await anonymous.get("/login")
        assert 'id="oidc-sign-in"' in login.text
        assert 'name="password"' not in login.text  # password sign-in is off...
        refused = await anonymous.post("/login", data={"username": name, "password": PASSWORD})
        assert refused.status_code == 403  # ... and refused

    async with httpx.AsyncClient(timeout=15) as http:
        back = await sign_in(http, console, provider, email.upper())  # the provider's case is not ours
        assert back.status_code == 200, back.text
        assert '<meta http-equiv="refresh" content="0;url=/">' in back.text
        session = next(c for c in back.headers.get_list("set-cookie") if c.startswith("fte_console_session="))
        assert "SameSite=strict" in session
        assert "HttpOnly" in session
        queue = await http.get(f"{console}/")
        assert queue.status_code == 200
        assert f"{name} (agent)" in queue.text

    refusals: list[tuple[Tweaks, int, str]] = [
        (Tweaks(state="forged-state"), 403, "This sign-in was not started here"),
        (Tweaks(nonce="another-nonce"), 401, "could not be verified"),
        (Tweaks(other_key=True), 401, "could not be verified"),
        (Tweaks(expired=True), 401, "could not be verified"),
        (Tweaks(email_verified=False), 403, "did not vouch for an email address"),
    ]
    for tweaks, status, text in refusals:
        provider.tweaks = tweaks
        async with httpx.AsyncClient(timeout=15) as http:
            back = await sign_in(http, console, provider, email)
            assert (back.status_code, tweaks) == (status, tweaks)
            assert text in back.text
            assert not any(c.startswith("fte_console_session=") for c in back.headers.get_list("set-cookie"))
            assert (await http.get(f"{console}/")).status_code == 303  # still signed out
    provider.tweaks = Tweaks()

    # An email no account has: refused (auto-provisioning is off by default).
    async with httpx.AsyncClient(timeout=15) as http:
        back = await sign_in(http, console, provider, f"stranger-{uuid.uuid4().hex[:6]}@staff.example")
        assert back.status_code == 403
        assert "No staff account has this email address" in back.text

    # The same callback replayed without the browser's flow cookie is refused too.
    provider.email = email
    async with httpx.AsyncClient(timeout=15) as http:
        start = await http.get(f"{console}/login/oidc")
        redirect = (await http.get(start.headers["location"])).headers["location"]
    async with httpx.AsyncClient(timeout=15) as other_browser:
        replay = await other_browser.get(redirect)
    assert replay.status_code == 403


async def test_an_unknown_verified_email_gets_an_agent_account_when_auto_provisioning_is_on(
    full_stack: Stack, provider: FakeProvider, tmp_path: Path
) -> None:
    email = f"new-{uuid.uuid4().hex[:8]}@staff.example"
    async with console_process(full_stack, provider, tmp_path / "console.log", oidc_auto_provision="true") as base:
        async with httpx.AsyncClient(base_url=base) as anonymous:
            assert 'name="password"' in (await anonymous.get("/login")).text  # both ways to sign in
        async with httpx.AsyncClient(timeout=15) as http:
            back = await sign_in(http, base, provider, email)
            assert back.status_code == 200, back.text
            assert f"{email} (agent)" in (await http.get(f"{base}/")).text
        async with httpx.AsyncClient(timeout=15) as http:  # the next sign-in finds the same account
            assert (await sign_in(http, base, provider, email)).status_code == 200
            assert f"{email} (agent)" in (await http.get(f"{base}/")).text
