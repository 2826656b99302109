"""A local stand-in for Google's OAuth2 certs endpoint, and a signer of Pub/Sub-push OIDC tokens.

The key pair is generated at start; `certs_url` serves its certificate in the v1 format
(`{kid: PEM certificate}`) that `google.oauth2.id_token.verify_token(..., certs_url=...)` reads, so
the real verification code runs against tokens signed by `sign_push_token`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import secrets
import time
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fte_stack.fakes._http import LocalHttpServer, serve_until_interrupted

GOOGLE_ISSUER = "https://accounts.google.com"
CERTS_PATH = "oauth2/v1/certs"


class SigningKey:
    """An RSA key with a self-signed certificate, named by a key id (`kid`)."""

    def __init__(self) -> None:
        self.kid = secrets.token_hex(20)
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "local-google-certs")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .sign(self._key, hashes.SHA256())
        )
        self.certificate_pem = cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
        private_pem = self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        self._signer = crypt.RSASigner.from_string(private_pem, key_id=self.kid)  # type: ignore[no-untyped-call]

    def sign(self, claims: dict[str, Any]) -> str:
        token: bytes = jwt.encode(self._signer, claims)  # type: ignore[no-untyped-call]
        return token.decode("ascii")


def push_claims(
    *,
    audience: str,
    email: str,
    email_verified: bool = True,
    issuer: str = GOOGLE_ISSUER,
    lifetime_seconds: int = 3600,
    issued_at: float | None = None,
) -> dict[str, Any]:
    """The claims Pub/Sub puts in a push subscription's OIDC token."""
    iat = int(issued_at if issued_at is not None else time.time())
    return {
        "iss": issuer,
        "aud": audience,
        "azp": secrets.token_hex(10),
        "sub": str(secrets.randbits(64)),
        "email": email,
        "email_verified": email_verified,
        "iat": iat,
        "exp": iat + lifetime_seconds,
    }


class FakeGoogleCerts:
    """Serves the certs of one generated key (plus any extra keys) at `certs_url`."""

    def __init__(self, port: int = 0) -> None:
        self.key = SigningKey()
        self._server = LocalHttpServer(
            Starlette(routes=[Route(f"/{CERTS_PATH}", self._certs, methods=["GET"])]), port=port
        )

    @property
    def url(self) -> str:
        return self._server.url

    @property
    def certs_url(self) -> str:
        return f"{self._server.url}{CERTS_PATH}"

    async def start(self) -> str:
        await self._server.start()
        return self.certs_url

    async def stop(self) -> None:
        await self._server.stop()

    def sign_push_token(self, *, audience: str, email: str, **overrides: Any) -> str:
        """A Pub/Sub push token signed by the served key; `overrides` replace or add claims."""
        claims = push_claims(audience=audience, email=email)
        claims.update(overrides)
        return self.key.sign(claims)

    async def _certs(self, request: Request) -> Response:
        return JSONResponse({self.key.kid: self.key.certificate_pem}, headers={"Cache-Control": "public, max-age=3600"})


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve a local Google certs endpoint.")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()

    serve_until_interrupted(lambda: FakeGoogleCerts(args.port), "certs")


if __name__ == "__main__":
    main()
