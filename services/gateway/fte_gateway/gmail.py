"""Gmail: the API client (google-api-python-client) and the sync that turns new inbox messages
into MessageReceived events.

A push only says "something changed": the sync lists history from the position the gateway
stored (not the one in the notification), fetches each new message, publishes it, and only then
moves the stored position forward. The same sync runs periodically to catch dropped pushes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import google_auth_httplib2
import httplib2
from fte_runtime import topics
from google.auth.credentials import AnonymousCredentials, Credentials
from google.oauth2.credentials import Credentials as UserCredentials
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from fte_gateway import events
from fte_gateway.events import Outgoing
from fte_gateway.mime import parse_gmail_message
from fte_gateway.publisher import Publisher
from fte_gateway.settings import GatewaySettings
from fte_gateway.store import GatewayStore

log = logging.getLogger("fte.gateway.gmail")

SCOPES = ["https://www.googleapis.com/auth/gmail.modify"]
HTTP_TIMEOUT_SECONDS = 10
FETCH_CONCURRENCY = 8
MAX_HISTORY_PAGES = 20
# Messages with these labels are not customer mail for us: our own replies, drafts, spam.
SKIP_LABELS = frozenset({"SENT", "DRAFT", "SPAM", "TRASH"})


class StaleHistory(Exception):
    """The stored historyId is older than the history Gmail keeps (404)."""


class GmailUnavailable(Exception):
    """Gmail failed or throttled; the caller retries later (push: 503)."""


class GmailApi:
    """Blocking Gmail calls, one httplib2 connection per thread (httplib2 is not thread-safe)."""

    def __init__(self, settings: GatewaySettings) -> None:
        self._settings = settings
        self._local = threading.local()
        self._credentials: Credentials = (
            UserCredentials.from_authorized_user_file(str(settings.gmail_credentials_file), SCOPES)  # type: ignore[no-untyped-call]
            if settings.gmail_credentials_file
            else AnonymousCredentials()  # type: ignore[no-untyped-call]
        )

    def _users(self) -> Any:
        users = getattr(self._local, "users", None)
        if users is None:
            http = google_auth_httplib2.AuthorizedHttp(
                self._credentials, http=httplib2.Http(timeout=HTTP_TIMEOUT_SECONDS)
            )
            options = {"api_endpoint": self._settings.gmail_api_endpoint} if self._settings.gmail_api_endpoint else None
            service = build(
                "gmail", "v1", http=http, static_discovery=True, cache_discovery=False, client_options=options
            )
            users = service.users()
            self._local.users = users
        return users

    def _call(self, request: Any) -> dict[str, Any]:
        try:
            result: dict[str, Any] = request.execute(num_retries=1)
        except HttpError as exc:
            if exc.resp.status == 404:
                raise
            raise GmailUnavailable(f"Gmail answered {exc.resp.status}") from exc
        except (OSError, httplib2.HttpLib2Error) as exc:
            raise GmailUnavailable(type(exc).__name__) from exc
        return result

    @property
    def user(self) -> str:
        return self._settings.gmail_user

    def profile(self) -> dict[str, Any]:
        return self._call(self._users().getProfile(userId=self.user))

    def history(self, start: int) -> tuple[list[str], int]:
        """Ids of messages added since `start` (oldest first) and the mailbox's latest historyId."""
        ids: list[str] = []
        token: str | None = None
        latest = start
        for _ in range(MAX_HISTORY_PAGES):
            try:
                page = self._call(
                    self._users()
                    .history()
                    .list(userId=self.user, startHistoryId=str(start), historyTypes="messageAdded", pageToken=token)
                )
            except HttpError as exc:
                raise StaleHistory(str(start)) from exc
            for entry in page.get("history", ()):
                for added in entry.get("messagesAdded", ()):
                    ids.append(str(added["message"]["id"]))
            latest = max(latest, int(page.get("historyId", latest)))
            token = page.get("nextPageToken")
            if not token:
                break
        return ids, latest

    def recent(self, limit: int) -> list[str]:
        """The newest inbox messages, oldest first."""
        page = self._call(self._users().messages().list(userId=self.user, labelIds=["INBOX"], maxResults=limit))
        return [str(m["id"]) for m in reversed(page.get("messages", ()))]

    def get(self, message_id: str) -> dict[str, Any] | None:
        try:
            return self._call(self._users().messages().get(userId=self.user, id=message_id, format="full"))
        except HttpError:
            return None  # deleted since it was listed

    def watch(self) -> dict[str, Any]:
        body = {
            "topicName": self._settings.gmail_watch_topic,
            "labelIds": list(self._settings.gmail_watch_label_ids),
            "labelFilterBehavior": "include",
        }
        return self._call(self._users().watch(userId=self.user, body=body))


@dataclass(frozen=True)
class SyncResult:
    published: int
    skipped: int
    history_id: int
    fallback: bool


class GmailSync:
    def __init__(self, settings: GatewaySettings, store: GatewayStore, publisher: Publisher, api: GmailApi) -> None:
        self.settings = settings
        self.store = store
        self.publisher = publisher
        self.api = api
        self.address = settings.gmail_address.casefold()
        self._lock = asyncio.Lock()

    async def sync(self, correlation_id: str) -> SyncResult:
        """Publish every new inbox message. Raises KafkaUnavailable or GmailUnavailable, leaving the
        stored position where it was (the next push or sweep retries)."""
        async with self._lock, self.store.sync_lock(self.address):
            start = await self.store.history_id(self.address)
            fallback = start is None
            ids: list[str] = []
            latest = 0
            if start is not None:
                try:
                    ids, latest = await asyncio.to_thread(self.api.history, start)
                except StaleHistory:
                    log.warning("stored historyId is stale; syncing recent messages", extra={"history_id": start})
                    fallback = True
            if fallback:
                # The position first, then the listing: mail arriving in between is seen again next time.
                latest = int((await asyncio.to_thread(self.api.profile))["historyId"])
                ids = await asyncio.to_thread(self.api.recent, self.settings.gmail_fallback_max_messages)
            ids = list(dict.fromkeys(ids))
            pending = await self.store.unpublished(ids) if ids else set()
            ordered = [i for i in ids if i in pending]
            resources = await self._fetch(ordered)
            outgoing: list[Outgoing] = []
            skipped = 0
            for resource in resources:
                mail = parse_gmail_message(resource)
                if self._own_or_not_inbox(mail.label_ids, mail.from_address):
                    skipped += 1
                    continue
                key, message = events.from_email(mail, self.settings.gmail_address)
                outgoing.append(Outgoing(topics.TICKETS_INCOMING, key, f"gmail:{mail.gmail_id}", message))
            # One at a time, in history order: one customer's emails keep their order.
            for event in outgoing:
                await self.publisher.publish([event], correlation_id)
            await self.store.mark_published(ordered)
            if latest:
                await self.store.save_history_id(self.address, latest)
            return SyncResult(len(outgoing), skipped, latest, fallback)

    def _own_or_not_inbox(self, labels: tuple[str, ...], sender: str) -> bool:
        return bool(SKIP_LABELS.intersection(labels)) or "INBOX" not in labels or sender.casefold() == self.address

    async def _fetch(self, ids: list[str]) -> list[dict[str, Any]]:
        gate = asyncio.Semaphore(FETCH_CONCURRENCY)

        async def one(message_id: str) -> dict[str, Any] | None:
            async with gate:
                return await asyncio.to_thread(self.api.get, message_id)

        fetched = await asyncio.gather(*(one(i) for i in ids))
        return [r for r in fetched if r is not None]

    async def renew_watch(self) -> dict[str, Any]:
        """users.watch (expires after 7 days; run daily). A first watch sets the sync position."""
        reply = await asyncio.to_thread(self.api.watch)
        expiration = datetime.fromtimestamp(int(reply["expiration"]) / 1000, UTC)
        if await self.store.history_id(self.address) is None:
            await self.store.save_history_id(self.address, int(reply["historyId"]), expiration)
        else:
            await self.store.save_history_id(self.address, 0, expiration)
        return reply
