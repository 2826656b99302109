"""OIDC sign-in (authorization code flow with PKCE), on when `OIDC_ISSUER` is set.

Authlib does the protocol: the issuer's discovery document, the authorization URL with `state`, a
`nonce` and an S256 code challenge, the code exchange with the client secret and the code
verifier, and the ID token's signature against the issuer's JWKS (read again when a token names a
key it does not know, so the provider can rotate keys). The console checks the rest: the state
against the one it handed this browser, the discovery document's issuer, the token's `iss`, `aud`
and expiry, and a verified `email` claim, which it matches to a staff account's email. An email no
account has is refused unless `OIDC_AUTO_PROVISION` creates an `agent` account for it (admins are
always made with the CLI).

The state, nonce and code verifier wait in a short-lived HttpOnly cookie of their own, sent back
on the provider's redirect (SameSite=Lax: the session cookie's Strict would not come back on that
cross-site navigation). Each is random; the cookie only ever pairs them with this browser.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
from collections.abc import Mapping
from typing import Any

import httpx
from authlib.integrations.starlette_client import OAuth, OAuthError, StarletteOAuth2App
from joserfc.errors import JoseError
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from fte_console.accounts import AccountError, Accounts
from fte_console.settings import ConsoleSettings

log = logging.getLogger("fte.console.oidc")

FLOW_COOKIE = "fte_console_oidc"
FLOW_PATH = "/login/oidc"
FLOW_SECONDS = 600
# Seconds of clock difference tolerated on `exp` and `iat`.
LEEWAY = 30
SCOPES = "openid email profile"
REFUSED = "The sign-in could not be verified. Start again from the sign-in page."
SIGNED_IN = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="0;url=/">'
    '<title>Signed in</title></head><body><p>Signed in. <a href="/" id="continue">Continue</a></p></body></html>'
)


def enabled(settings: ConsoleSettings) -> bool:
    return bool(settings.oidc_issuer)


def _issuer(settings: ConsoleSettings) -> str:
    return settings.oidc_issuer.rstrip("/")


def provider(settings: ConsoleSettings, timeout: float = 10.0) -> StarletteOAuth2App:
    """The authlib client of the configured issuer (its discovery document is read on first use)."""
    oauth = OAuth()
    client: StarletteOAuth2App = oauth.register(
        "staff",
        client_id=settings.oidc_client_id,
        client_secret=settings.oidc_client_secret.get_secret_value(),
        server_metadata_url=f"{_issuer(settings)}/.well-known/openid-configuration",
        client_kwargs={"scope": SCOPES, "code_challenge_method": "S256", "timeout": timeout},
    )
    return client


def _pack(flow: Mapping[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(dict(flow)).encode()).decode()


def _unpack(cookie: str) -> dict[str, str]:
    try:
        flow = json.loads(base64.urlsafe_b64decode(cookie.encode()))
    except ValueError:
        return {}
    if not isinstance(flow, dict) or not all(isinstance(flow.get(k), str) for k in ("state", "nonce", "verifier")):
        return {}
    return {k: flow[k] for k in ("state", "nonce", "verifier")}


class OidcSignIn:
    """The two endpoints, for one app: /login/oidc (to the provider) and its callback."""

    def __init__(self, headers: Mapping[str, str], session_cookie: str) -> None:
        self.headers = dict(headers)
        self.session_cookie = session_cookie
        self._client: StarletteOAuth2App | None = None

    def routes(self) -> list[Route]:
        return [
            Route(FLOW_PATH, self.start, methods=["GET"]),
            Route(f"{FLOW_PATH}/callback", self.callback, methods=["GET"], name="oidc_callback"),
        ]

    def _refuse(self, status: int, text: str = REFUSED) -> Response:
        response = PlainTextResponse(text, status_code=status, headers=self.headers)
        response.delete_cookie(FLOW_COOKIE, path=FLOW_PATH)
        return response

    def _provider(self, settings: ConsoleSettings) -> StarletteOAuth2App:
        if self._client is None:
            self._client = provider(settings, settings.agent_timeout_seconds)
        return self._client

    @staticmethod
    def _redirect_url(request: Request, settings: ConsoleSettings) -> str:
        return settings.oidc_redirect_url or str(request.url_for("oidc_callback"))

    async def _metadata(self, client: StarletteOAuth2App, settings: ConsoleSettings) -> dict[str, Any]:
        metadata: dict[str, Any] = await client.load_server_metadata()
        # A discovery document must name the issuer it was read from (OIDC Discovery 4.3).
        if str(metadata.get("issuer", "")).rstrip("/") != _issuer(settings):
            raise OAuthError(description="the discovery document names another issuer")
        return metadata

    async def start(self, request: Request) -> Response:
        deps = request.app.state.deps
        settings: ConsoleSettings = deps.settings
        if not enabled(settings):
            return PlainTextResponse("OIDC sign-in is not configured", status_code=404, headers=self.headers)
        client = self._provider(settings)
        try:
            await self._metadata(client, settings)
            flow = await client.create_authorization_url(self._redirect_url(request, settings))
        except (OAuthError, httpx.HTTPError, ValueError) as exc:
            log.warning("the OIDC provider's discovery document could not be read", extra={"error": str(exc)[:300]})
            return self._refuse(502, "The sign-in provider did not answer; try again.")
        response = RedirectResponse(flow["url"], status_code=303, headers=self.headers)
        response.set_cookie(
            FLOW_COOKIE,
            _pack({"state": flow["state"], "nonce": flow["nonce"], "verifier": flow["code_verifier"]}),
            max_age=FLOW_SECONDS,
            path=FLOW_PATH,
            httponly=True,
            samesite="lax",
            secure=settings.cookie_secure,
        )
        return response

    async def callback(self, request: Request) -> Response:
        deps = request.app.state.deps
        settings: ConsoleSettings = deps.settings
        accounts: Accounts = deps.accounts
        if not enabled(settings):
            return PlainTextResponse("OIDC sign-in is not configured", status_code=404, headers=self.headers)
        flow = _unpack(request.cookies.get(FLOW_COOKIE, ""))
        params = request.query_params
        if params.get("error"):
            await accounts.audit("", "sign_in_oidc_refused", reason=str(params["error"])[:100])
            return self._refuse(401, "The sign-in provider refused the sign-in.")
        state, code = params.get("state", ""), params.get("code", "")
        if not flow or not hmac.compare_digest(state.encode(), flow["state"].encode()):
            # Not the sign-in this browser started (a forged or replayed redirect).
            await accounts.audit("", "sign_in_oidc_failed", reason="state")
            return self._refuse(403, "This sign-in was not started here, or it expired. Start again.")
        if not code:
            return self._refuse(400)
        client = self._provider(settings)
        try:
            await self._metadata(client, settings)
            token = await client.fetch_access_token(
                redirect_uri=self._redirect_url(request, settings), code=code, code_verifier=flow["verifier"]
            )
            claims = await client.parse_id_token(
                token,
                nonce=flow["nonce"],
                claims_options={
                    "iss": {"essential": True, "value": _issuer(settings)},
                    "aud": {"essential": True, "value": settings.oidc_client_id},
                },
                leeway=LEEWAY,
            )
        except (OAuthError, JoseError, httpx.HTTPError, KeyError, ValueError) as exc:
            log.warning("an OIDC sign-in was refused", extra={"error": type(exc).__name__, "detail": str(exc)[:200]})
            await accounts.audit("", "sign_in_oidc_failed", reason=type(exc).__name__)
            return self._refuse(401)
        if claims is None:  # the token response had no ID token
            return self._refuse(401)
        email = str(claims.get("email", "")).strip().lower()
        if not email or claims.get("email_verified") is not True:
            await accounts.audit("", "sign_in_oidc_failed", reason="email not verified")
            return self._refuse(403, "The provider did not vouch for an email address, so no account matches.")
        user = await accounts.user_by_email(email)
        if user is None and settings.oidc_auto_provision:
            try:
                user = await accounts.provision(email)
            except AccountError as exc:
                return self._refuse(403, f"No account could be made for this email: {exc}.")
            await accounts.audit("oidc", "user_added", f"users/{user.username}", role=user.role.value)
        if user is None:
            await accounts.audit(email, "sign_in_oidc_unknown")
            return self._refuse(403, "No staff account has this email address. Ask an admin to add one.")
        session_token, _ = await accounts.open_session(user)
        await accounts.audit(user.username, "sign_in", method="oidc")
        # A page that moves on by itself rather than a redirect: the browser came here from the
        # provider's site, and would hold back the SameSite=Strict session cookie on a redirect.
        response = HTMLResponse(SIGNED_IN, headers=self.headers)
        response.set_cookie(
            self.session_cookie, session_token, max_age=int(settings.session_hours * 3600), httponly=True,
            samesite="strict", secure=settings.cookie_secure, path="/",
        )  # fmt: skip
        response.delete_cookie(FLOW_COOKIE, path=FLOW_PATH)
        return response
