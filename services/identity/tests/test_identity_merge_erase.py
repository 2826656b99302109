"""MergeCustomers and EraseCustomer, and their events through the outbox to the real broker."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import grpc
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from fte.events.v1 import customer_events_pb2
from fte.identity.v1 import identity_pb2, identity_service_pb2
from fte_identity.outbox import EVENT_TYPES, OutboxRelay
from fte_runtime import envelope, topics
from fte_runtime.settings import KafkaSettings
from identity_helpers import (  # type: ignore[import-not-found]
    Channel,
    Identity,
    Kind,
    count_rows,
    email,
    expect_error,
    ident,
    resolve_request,
)

Req = identity_service_pb2
State = identity_pb2.Customer


def new_email() -> str:
    return f"m.{uuid.uuid4().hex[:10]}@example.org"


async def email_customer(identity: Identity, address: str, name: str = "") -> identity_pb2.Customer:
    response = await identity.stub.ResolveCustomer(resolve_request(Channel.CHANNEL_EMAIL, email(address), name=name))
    customer: identity_pb2.Customer = response.customer
    return customer


async def whatsapp_customer(identity: Identity, number: str) -> identity_pb2.Customer:
    response = await identity.stub.ResolveCustomer(
        resolve_request(Channel.CHANNEL_WHATSAPP, ident(Kind.IDENTIFIER_KIND_WHATSAPP, number), name="Wa Name")
    )
    customer: identity_pb2.Customer = response.customer
    return customer


def unique_whatsapp() -> str:
    return f"whatsapp:+34 612 {uuid.uuid4().int % 1_000_000:06d}"


async def test_merge_moves_identifiers_audits_and_the_source_resolves_to_the_target(identity: Identity) -> None:
    address, number = new_email(), unique_whatsapp()
    target = await email_customer(identity, address, "Target Person")
    source = await whatsapp_customer(identity, number)
    merged = await identity.stub.MergeCustomers(
        Req.MergeCustomersRequest(
            source_customer=source.name, target_customer=target.name, reason="same person, confirmed on a call"
        )
    )
    assert merged.customer.name == target.name
    # A WhatsApp sender proves its phone number too.
    assert sorted(i.kind for i in merged.customer.identifiers) == [
        Kind.IDENTIFIER_KIND_EMAIL,
        Kind.IDENTIFIER_KIND_PHONE,
        Kind.IDENTIFIER_KIND_WHATSAPP,
    ]
    record = merged.merge
    assert (record.source_customer, record.target_customer) == (source.name, target.name)
    assert record.actor == "staff"  # the caller's principal
    assert record.reason == "same person, confirmed on a call"
    assert record.merge_time.ToSeconds() > 0
    # Both the WhatsApp number and the old name now lead to the target.
    again = await whatsapp_customer(identity, number)
    assert again.name == target.name
    got = await identity.stub.GetCustomer(Req.GetCustomerRequest(name=source.name))
    assert got.customer.name == target.name
    assert await count_rows(identity.dsn, "SELECT count(*) FROM merges WHERE actor = 'staff' AND reason <> ''") >= 1
    assert (
        await count_rows(identity.dsn, "SELECT count(*) FROM outbox WHERE event_type = 'fte.events.v1.CustomersMerged'")
        >= 1
    )


async def test_merge_errors_write_nothing(identity: Identity) -> None:
    a = await email_customer(identity, new_email())
    b = await email_customer(identity, new_email())
    before = await count_rows(identity.dsn, "SELECT count(*) FROM merges")
    await expect_error(
        identity.stub.MergeCustomers(
            Req.MergeCustomersRequest(source_customer=a.name, target_customer=a.name, reason="x")
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "MERGE_INTO_SELF",
    )
    await expect_error(
        identity.stub.MergeCustomers(Req.MergeCustomersRequest(source_customer=a.name, target_customer=b.name)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "REASON_REQUIRED",
    )
    await expect_error(
        identity.stub.MergeCustomers(
            Req.MergeCustomersRequest(source_customer=f"customers/{uuid.uuid4()}", target_customer=b.name, reason="dup")
        ),
        grpc.StatusCode.NOT_FOUND,
        "CUSTOMER_NOT_FOUND",
    )
    await expect_error(
        identity.stub.MergeCustomers(
            Req.MergeCustomersRequest(source_customer="customers/not-a-uuid", target_customer=b.name, reason="dup")
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_NAME",
    )
    assert await count_rows(identity.dsn, "SELECT count(*) FROM merges") == before
    # Merging again after a merge is refused, except as a replay of the same request id.
    request = Req.MergeCustomersRequest(
        source_customer=a.name, target_customer=b.name, reason="dup", request_id="r-1" + a.name
    )
    first = await identity.stub.MergeCustomers(request)
    replay = await identity.stub.MergeCustomers(request)
    assert replay.merge == first.merge
    await expect_error(
        identity.stub.MergeCustomers(
            Req.MergeCustomersRequest(source_customer=a.name, target_customer=b.name, reason="dup")
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "CUSTOMER_ALREADY_MERGED",
    )
    assert await count_rows(identity.dsn, "SELECT count(*) FROM merges") == before + 1


async def test_erase_removes_personal_data_and_keeps_a_tombstone(identity: Identity) -> None:
    address = new_email()
    customer = await email_customer(identity, address, "Erin Erased")
    await identity.stub.LinkIdentifier(
        Req.LinkIdentifierRequest(
            customer=customer.name, identifier=ident(Kind.IDENTIFIER_KIND_PHONE, "+1 415 555 0188")
        )
    )
    await identity.stub.EraseCustomer(Req.EraseCustomerRequest(name=customer.name, reason="erasure request T-1234"))
    tomb = (await identity.stub.GetCustomer(Req.GetCustomerRequest(name=customer.name))).customer
    assert tomb.state == State.STATE_ERASED
    assert tomb.display_name == ""
    assert list(tomb.identifiers) == []
    assert await count_rows(identity.dsn, "SELECT count(*) FROM identifiers WHERE value = $1", address) == 0
    assert await count_rows(identity.dsn, "SELECT count(*) FROM customers WHERE display_name = 'Erin Erased'") == 0
    # The address is now unknown: it belongs to a new customer if it writes again.
    fresh = await identity.stub.ResolveCustomer(resolve_request(Channel.CHANNEL_EMAIL, email(address)))
    assert fresh.created
    assert fresh.customer.name != customer.name
    # Erasing again is a no-op with no second event.
    events = "SELECT count(*) FROM outbox WHERE record_key = $1"
    assert await count_rows(identity.dsn, events, customer.name) == 1
    await identity.stub.EraseCustomer(Req.EraseCustomerRequest(name=customer.name, reason="again"))
    assert await count_rows(identity.dsn, events, customer.name) == 1
    await expect_error(
        identity.stub.MergeCustomers(
            Req.MergeCustomersRequest(source_customer=fresh.customer.name, target_customer=customer.name, reason="x")
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "CUSTOMER_ERASED",
    )


async def test_erase_errors(identity: Identity) -> None:
    await expect_error(
        identity.stub.EraseCustomer(Req.EraseCustomerRequest(name=f"customers/{uuid.uuid4()}", reason="gdpr")),
        grpc.StatusCode.NOT_FOUND,
        "CUSTOMER_NOT_FOUND",
    )
    customer = await email_customer(identity, new_email())
    await expect_error(
        identity.stub.EraseCustomer(Req.EraseCustomerRequest(name=customer.name)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "REASON_REQUIRED",
    )
    still = await identity.stub.GetCustomer(Req.GetCustomerRequest(name=customer.name))
    assert still.customer.state == State.STATE_ACTIVE


async def _read_events(kafka: KafkaSettings, want: set[str], timeout: float = 20.0) -> dict[str, envelope.Event]:
    """Reads fte.customers.changed from the start until every event key in `want` was seen."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    found: dict[str, envelope.Event] = {}
    try:
        partitions = [
            TopicPartition(topics.CUSTOMERS_CHANGED, p)
            for p in consumer.partitions_for_topic(topics.CUSTOMERS_CHANGED) or {0, 1, 2}
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = asyncio.get_running_loop().time() + timeout
        while not want <= found.keys() and asyncio.get_running_loop().time() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    event = envelope.decode(record.value, record.headers, EVENT_TYPES)
                    found[f"{event.type}:{record.key.decode()}"] = event
    finally:
        await consumer.stop()
    return found


@pytest.mark.kafka
async def test_erase_and_merge_events_reach_the_broker_even_when_it_was_down(
    identity: Identity, kafka_settings: KafkaSettings
) -> None:
    target = await email_customer(identity, new_email())
    source = await email_customer(identity, new_email())
    await identity.stub.MergeCustomers(
        Req.MergeCustomersRequest(source_customer=source.name, target_customer=target.name, reason="duplicate")
    )
    erased = await email_customer(identity, new_email())
    await identity.stub.EraseCustomer(Req.EraseCustomerRequest(name=erased.name, reason="erasure request"))
    pending = "SELECT count(*) FROM outbox WHERE publish_time IS NULL AND record_key = ANY($1::text[])"
    keys = [target.name, erased.name]
    # Kafka unreachable: the relay fails, and the events stay in the outbox.
    down = OutboxRelay(
        identity.app.pool, KafkaSettings(kafka_bootstrap="127.0.0.1:9"), source="identity.fte", poll_seconds=0.1
    )
    with pytest.raises(Exception):  # noqa: B017, PT011 - aiokafka's connection error type varies
        await down.publish_pending()
    await down.close()
    assert await count_rows(identity.dsn, pending, keys) == 2
    # With the broker up, a relay publishes them.
    relay = OutboxRelay(identity.app.pool, kafka_settings, source="identity.fte", poll_seconds=0.1)
    task = asyncio.create_task(relay.run())
    try:
        for _ in range(100):
            if await count_rows(identity.dsn, pending, keys) == 0:
                break
            await asyncio.sleep(0.1)
        assert await count_rows(identity.dsn, pending, keys) == 0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    merged_key = f"fte.events.v1.CustomersMerged:{target.name}"
    erased_key = f"fte.events.v1.CustomerErased:{erased.name}"
    events = await _read_events(kafka_settings, {merged_key, erased_key})
    merge_event = events[merged_key]
    assert isinstance(merge_event.message, customer_events_pb2.CustomersMerged)
    assert merge_event.message.source_customer == source.name
    assert merge_event.message.target_customer == target.name
    assert merge_event.source == "identity.fte"
    erase_event = events[erased_key]
    assert isinstance(erase_event.message, customer_events_pb2.CustomerErased)
    assert erase_event.message.customer == erased.name
    assert erase_event.message.erased_time.ToSeconds() > 0


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


@pytest.mark.kafka
async def test_one_relay_rides_out_a_broker_outage(identity: Identity, kafka_settings: KafkaSettings) -> None:
    """The relay starts while its bootstrap address is dead, keeps retrying, and publishes once
    the broker is reachable (a local forwarder plays the broker coming back)."""
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()
    relay = OutboxRelay(
        identity.app.pool,
        KafkaSettings(kafka_bootstrap=f"127.0.0.1:{port}"),
        source="identity.fte",
        poll_seconds=0.1,
    )
    task = asyncio.create_task(relay.run())
    forwarder: asyncio.Server | None = None
    try:
        customer = await email_customer(identity, new_email())
        await identity.stub.EraseCustomer(Req.EraseCustomerRequest(name=customer.name, reason="outage test"))
        relay.wake()
        pending = "SELECT count(*) FROM outbox WHERE publish_time IS NULL AND record_key = $1"
        await asyncio.sleep(1.0)
        assert await count_rows(identity.dsn, pending, customer.name) == 1
        host, broker_port = kafka_settings.kafka_bootstrap.rsplit(":", 1)

        async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_reader, up_writer = await asyncio.open_connection(host, int(broker_port))
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

        forwarder = await asyncio.start_server(forward, "127.0.0.1", port)
        for _ in range(200):
            if await count_rows(identity.dsn, pending, customer.name) == 0:
                break
            await asyncio.sleep(0.1)
        assert await count_rows(identity.dsn, pending, customer.name) == 0
        key = f"fte.events.v1.CustomerErased:{customer.name}"
        message = (await _read_events(kafka_settings, {key}))[key].message
        assert isinstance(message, customer_events_pb2.CustomerErased)
        assert message.customer == customer.name
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if forwarder is not None:
            forwarder.close()
            await forwarder.wait_closed()
