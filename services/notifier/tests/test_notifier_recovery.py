"""Recovery paths: a part left `sending` by a crash is looked up at the provider before it is sent
again; statuses reported before the ids were recorded are not lost; secrets from mounted files."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from fte.common.v1 import common_pb2
from fte_notifier.server import migrate
from fte_notifier.settings import NotifierSettings
from fte_notifier.statuses import DELIVERED, QUEUED, READ
from fte_notifier.store import NewDelivery, Store
from fte_stack.fakes.gmail import FakeGmail
from notifier_helpers import NotifierFactory, email_request, provider_env, wait_final  # type: ignore[import-not-found]
from pydantic import SecretStr

SENT = common_pb2.DELIVERY_STATUS_SENT


async def _as_if_crashed_mid_send(dsn: str, names: list[str]) -> None:
    """The state a crash leaves between 'sending' being committed and the provider's answer."""
    conn = await asyncpg.connect(dsn)
    try:
        ids = [uuid.UUID(n.removeprefix("deliveries/")) for n in names]
        await conn.execute(
            """UPDATE notifier.delivery_parts SET state = 'sending', provider_message_id = NULL, sent_time = NULL
               WHERE delivery_id = ANY($1::uuid[])""",
            ids,
        )
        await conn.execute(
            """UPDATE notifier.deliveries SET status = 1, sent_time = NULL, lease_owner = 'crashed',
                   lease_until = now() - interval '1 second' WHERE id = ANY($1::uuid[])""",
            ids,
        )
    finally:
        await conn.close()


async def test_gmail_part_in_flight_is_found_by_message_id_or_sent_once(
    start_notifier: NotifierFactory, fake_gmail: FakeGmail
) -> None:
    first = await start_notifier(**provider_env(fake_gmail, None))
    reached = await first.stub.SendMessage(email_request("This one reached Gmail.", subject="A"))
    lost = await first.stub.SendMessage(email_request("This one never left.", subject="B"))
    original = await wait_final(first.stub, reached.delivery.name)
    dropped = await wait_final(first.stub, lost.delivery.name)
    await first.close()
    # "lost": the request never reached Gmail (drop it from the mailbox, as if never sent).
    with fake_gmail.state.lock:
        del fake_gmail.state.messages[dropped.provider_message_ids[0]]
    dsn = first.settings.database_url.get_secret_value()
    await _as_if_crashed_mid_send(dsn, [original.name, dropped.name])

    second = await start_notifier(**provider_env(fake_gmail, None), database_url=dsn)
    again = await wait_final(second.stub, original.name)
    resent = await wait_final(second.stub, dropped.name)
    assert again.status == SENT
    assert list(again.provider_message_ids) == list(original.provider_message_ids)  # found, not resent
    assert resent.status == SENT
    sent = fake_gmail.sent()
    assert len(sent) == 2
    assert resent.provider_message_ids[0] in {m.id for m in sent}
    lookups = [p for m, p in fake_gmail.state.requests if m == "GET" and p.endswith("/messages")]
    assert len(lookups) == 2


async def test_status_reported_before_the_id_was_recorded_is_applied(
    new_database: Callable[[], Awaitable[str]],
) -> None:
    dsn = await new_database()
    await migrate(NotifierSettings(database_url=SecretStr(dsn)))
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2, server_settings={"search_path": "notifier"})
    try:
        store = Store(pool)
        new = NewDelivery(
            request_id="early-1",
            fingerprint="f",
            channel=common_pb2.CHANNEL_WHATSAPP,
            recipient="whatsapp:+14155552671",
            subject="",
            text_body="Hi.",
            ticket_id="T",
            reply_to=None,
            template=None,
            local_only=False,
            part_count=1,
        )
        _, duplicate = await store.insert(new)
        assert not duplicate
        [claimed] = await store.claim("me", 10, 30)
        assert [p.state for p in claimed.parts] == ["pending"]
        await store.begin_part(claimed.id, 0, "me", 30)
        # The provider's callback beats the dispatcher's bookkeeping: kept, not applied yet.
        await store.apply_status("SMearly", DELIVERED, "", "", datetime.now(UTC))
        assert (await store.get(claimed.id)).status == QUEUED  # type: ignore[union-attr]
        assert await store.complete(claimed, "me", ["SMearly"], 0)
        assert (await store.get(claimed.id)).provider_message_ids == ["SMearly"]  # type: ignore[union-attr]
        assert (await store.get(claimed.id)).status == DELIVERED  # type: ignore[union-attr]
        # Repeats and stale statuses change nothing; a later one moves it on.
        await store.apply_status("SMearly", DELIVERED, "", "", datetime.now(UTC))
        await store.apply_status("SMearly", SENT, "", "", datetime.now(UTC))
        assert (await store.get(claimed.id)).status == DELIVERED  # type: ignore[union-attr]
        await store.apply_status("SMearly", READ, "", "", datetime.now(UTC))
        assert (await store.get(claimed.id)).status == READ  # type: ignore[union-attr]
        events = await pool.fetch("SELECT event_type FROM outcome_events ORDER BY seq")
        # Sent, then delivered (the early status, folded in on completion) and read.
        assert [e["event_type"] for e in events] == [
            "fte.events.v1.ReplyDelivered",
            "fte.events.v1.ReplyStatusChanged",
            "fte.events.v1.ReplyStatusChanged",
        ]
    finally:
        await pool.close()


def test_secrets_come_from_mounted_files(tmp_path: Path) -> None:
    token_file = tmp_path / "twilio-token"
    token_file.write_text("from-a-file\n")
    gmail_file = tmp_path / "gmail-token"
    gmail_file.write_text("gmail-secret")
    settings = NotifierSettings(
        twilio_account_sid="AC1", twilio_auth_token_file=token_file, gmail_access_token_file=gmail_file
    )
    assert settings.twilio_auth_token is not None
    assert settings.twilio_auth_token.get_secret_value() == "from-a-file"
    assert settings.twilio_configured
    assert settings.gmail_configured
    assert "from-a-file" not in repr(settings)
    assert "gmail-secret" not in str(settings.model_dump())
    assert not NotifierSettings().twilio_configured  # no credentials: local mode
    assert not NotifierSettings().gmail_configured
    assert NotifierSettings(gmail_api_endpoint="http://127.0.0.1:1/").gmail_configured  # a local fake
