"""Gmail and Twilio through their official SDKs. The SDKs are synchronous, so each call runs on a
worker thread with its own client (neither httplib2 nor a requests session is shared).

Errors are sorted into two kinds: permanent (the provider refused: fail now, with its reason) and
transient (timeouts, 429, 5xx: retry with backoff). A transient error is `uncertain` when the
request may have reached the provider (a timeout, a dropped connection); the next attempt then
asks the provider whether the message exists before sending it again.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httplib2
import requests
from google.auth.credentials import AnonymousCredentials
from google.oauth2.credentials import Credentials
from google_auth_httplib2 import AuthorizedHttp
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from fte_notifier.settings import NotifierSettings

TWILIO_API_BASE = "https://api.twilio.com"

# Request logs of the SDKs carry phone numbers and URLs; keep them out of ours.
for _name in ("twilio", "twilio.http_client", "googleapiclient", "googleapiclient.discovery", "google_auth_httplib2"):
    logging.getLogger(_name).setLevel(logging.WARNING)


class ProviderError(Exception):
    def __init__(self, reason: str, code: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class PermanentError(ProviderError):
    """The provider refused the message; retrying cannot help."""


class TransientError(ProviderError):
    def __init__(self, reason: str, code: str = "", *, uncertain: bool = False) -> None:
        super().__init__(reason, code)
        self.uncertain = uncertain


# --- Gmail ------------------------------------------------------------------------------------


class GmailSender:
    def __init__(self, settings: NotifierSettings) -> None:
        self._settings = settings
        self._local = threading.local()

    def _credentials(self) -> Credentials | AnonymousCredentials:
        s = self._settings
        if s.gmail_credentials_json is not None and s.gmail_credentials_json.get_secret_value():
            info = json.loads(s.gmail_credentials_json.get_secret_value())
            creds: Credentials = Credentials.from_authorized_user_info(  # type: ignore[no-untyped-call]
                info, scopes=["https://www.googleapis.com/auth/gmail.send"]
            )
            return creds
        if s.gmail_access_token is not None and s.gmail_access_token.get_secret_value():
            return Credentials(token=s.gmail_access_token.get_secret_value())  # type: ignore[no-untyped-call]
        return AnonymousCredentials()  # type: ignore[no-untyped-call]  # a local fake endpoint

    def _service(self) -> Any:
        service = getattr(self._local, "service", None)
        if service is None:
            http = AuthorizedHttp(
                self._credentials(), http=httplib2.Http(timeout=self._settings.provider_timeout_seconds)
            )
            options = {"api_endpoint": self._settings.gmail_api_endpoint} if self._settings.gmail_api_endpoint else None
            service = build(
                "gmail", "v1", http=http, static_discovery=True, cache_discovery=False, client_options=options
            )
            self._local.service = service
        return service

    def _fresh_if_dropped(self, request: Callable[[Any], Any]) -> Any:
        """Runs the request on this thread's connection. httplib2 reuses a kept-alive connection
        without checking it, and a server closes idle ones (each worker thread has its own, so all
        of them go stale in a quiet spell): writing to it fails with BrokenPipeError before any
        byte of the request was read, so it is sent once more, at once, on a new connection."""
        try:
            return request(self._service()).execute(num_retries=0)
        except BrokenPipeError:
            self._local.service = None
            return request(self._service()).execute(num_retries=0)

    def send(self, raw: str, thread_id: str) -> str:
        body: dict[str, str] = {"raw": raw}
        if thread_id:
            body["threadId"] = thread_id
        try:
            result = self._fresh_if_dropped(lambda s: s.users().messages().send(userId="me", body=body))
        except HttpError as exc:
            raise _gmail_error(exc) from None
        except (TimeoutError, OSError, httplib2.HttpLib2Error) as exc:
            self._local.service = None  # a broken connection must not be reused
            raise TransientError(f"Gmail unreachable: {type(exc).__name__}", uncertain=True) from None
        return str(result["id"])

    def find(self, message_id_header: str) -> str | None:
        """The Gmail id of a sent message with this Message-ID header, if Gmail has it."""
        try:
            query = f"rfc822msgid:{message_id_header.strip('<>')}"
            result = self._fresh_if_dropped(
                lambda s: s.users().messages().list(userId="me", q=query, includeSpamTrash=True)
            )
        except HttpError as exc:
            err = _gmail_error(exc)
            raise TransientError(f"Gmail lookup failed: {err.reason}", err.code) from None
        except (TimeoutError, OSError, httplib2.HttpLib2Error) as exc:
            self._local.service = None
            raise TransientError(f"Gmail unreachable: {type(exc).__name__}") from None
        messages = result.get("messages") or []
        return str(messages[0]["id"]) if messages else None


def _gmail_error(exc: HttpError) -> ProviderError:
    status = int(exc.resp.status)
    reason = exc.reason if isinstance(exc.reason, str) and exc.reason else f"HTTP {status}"
    content = exc.content.decode("utf-8", "replace") if isinstance(exc.content, bytes) else str(exc.content)
    rate_limited = status == 429 or (status == 403 and "ratelimitexceeded" in content.lower())
    if status >= 500 or rate_limited:
        return TransientError(f"Gmail error {status}: {reason}", str(status))
    return PermanentError(f"Gmail refused the message ({status}): {reason}", str(status))


# --- Twilio -----------------------------------------------------------------------------------


class RoutedTwilioHttpClient(TwilioHttpClient):  # type: ignore[misc]
    """The SDK's HTTP client, sending to a configured API base (a local fake) instead of Twilio's."""

    def __init__(self, api_base: str, timeout: float) -> None:
        super().__init__(timeout=timeout, logger=logging.getLogger("twilio.http_client"))
        self._api_base = api_base.rstrip("/")

    def request(  # noqa: PLR0917 - the SDK's signature
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        if url.startswith(TWILIO_API_BASE):
            url = self._api_base + url[len(TWILIO_API_BASE) :]
        return super().request(method, url, params, data, headers, auth, timeout, allow_redirects)


class WhatsAppSender:
    def __init__(self, settings: NotifierSettings) -> None:
        self._settings = settings
        self._local = threading.local()

    def _client(self) -> Client:
        client: Client | None = getattr(self._local, "client", None)
        if client is None:
            s = self._settings
            assert s.twilio_account_sid
            assert s.twilio_auth_token is not None
            http = (
                RoutedTwilioHttpClient(s.twilio_api_base_url, s.provider_timeout_seconds)
                if s.twilio_api_base_url
                else TwilioHttpClient(timeout=s.provider_timeout_seconds)
            )
            client = Client(s.twilio_account_sid, s.twilio_auth_token.get_secret_value(), http_client=http)
            self._local.client = client
        return client

    def send(self, to: str, body: str | None, content_sid: str | None, variables: dict[str, str] | None) -> str:
        kwargs: dict[str, Any] = {
            "to": to,
            "from_": self._settings.whatsapp_from,
            "status_callback": self._settings.status_callback_url,
        }
        if content_sid:
            kwargs["content_sid"] = content_sid
            kwargs["content_variables"] = json.dumps(variables or {})
        else:
            kwargs["body"] = body
        try:
            message = self._client().messages.create(**kwargs)
        except TwilioRestException as exc:
            raise _twilio_error(exc) from None
        except requests.RequestException as exc:
            self._local.client = None
            raise TransientError(f"Twilio unreachable: {type(exc).__name__}", uncertain=True) from None
        return str(message.sid)

    def find(self, to: str, body: str | None, since: datetime) -> str | None:
        """The sid of a message to `to` with this body sent since `since`, if Twilio has one.
        Twilio has no idempotency key on Messages, so a message is recognised by what it is."""
        try:
            found = self._client().messages.list(
                to=to, from_=self._settings.whatsapp_from, date_sent_after=since - timedelta(minutes=5), limit=200
            )
        except TwilioRestException as exc:
            err = _twilio_error(exc)
            raise TransientError(f"Twilio lookup failed: {err.reason}", err.code) from None
        except requests.RequestException as exc:
            self._local.client = None
            raise TransientError(f"Twilio unreachable: {type(exc).__name__}") from None
        for message in found:
            if body is None or (message.body or "").strip() == body.strip():
                return str(message.sid)
        return None


def _twilio_error(exc: TwilioRestException) -> ProviderError:
    code = str(exc.code or exc.status)
    reason = f"Twilio error {code}: {exc.msg}"
    if exc.status >= 500 or exc.status == 429:
        return TransientError(reason, code)
    return PermanentError(reason, code)
