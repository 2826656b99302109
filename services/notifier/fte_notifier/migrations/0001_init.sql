-- The notifier's outbox. A delivery row is written in the transaction that acknowledges
-- SendMessage; the dispatcher claims due rows with FOR UPDATE SKIP LOCKED and a lease.

CREATE TABLE deliveries (
    id uuid PRIMARY KEY,
    -- Position for "newest first" pagination.
    seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    -- Idempotency: one delivery per request id, enforced here, not by timing.
    request_id text NOT NULL UNIQUE,
    -- Hash of the request's content, to refuse a request id reused for a different message.
    fingerprint text NOT NULL,
    channel smallint NOT NULL,
    recipient text NOT NULL,
    subject text NOT NULL DEFAULT '',
    text_body text NOT NULL,
    ticket_id text NOT NULL DEFAULT '',
    reply_to jsonb,
    template jsonb,
    -- fte.common.v1.DeliveryStatus: 1 queued, 2 sent, 3 delivered, 4 read, 5 failed.
    status smallint NOT NULL DEFAULT 1,
    local_only boolean NOT NULL DEFAULT false,
    part_count integer NOT NULL DEFAULT 0,
    attempts integer NOT NULL DEFAULT 0,
    last_error text NOT NULL DEFAULT '',
    last_error_code text NOT NULL DEFAULT '',
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_owner text,
    lease_until timestamptz,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    sent_time timestamptz
);

-- What the dispatcher polls: queued rows by due time.
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 1;
CREATE INDEX deliveries_ticket ON deliveries (ticket_id, seq) WHERE ticket_id <> '';

-- One row per provider message (a long WhatsApp text is several). `sending` means a provider
-- call was started and its outcome is unknown: the next attempt asks the provider first.
CREATE TABLE delivery_parts (
    delivery_id uuid NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    part_no integer NOT NULL,
    state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sending', 'sent')),
    provider_message_id text UNIQUE,
    attempt_started_at timestamptz,
    sent_time timestamptz,
    PRIMARY KEY (delivery_id, part_no)
);

-- The furthest status the provider reported per message id. Status events can arrive before
-- the dispatcher has recorded the id, so they are kept here, not only applied to a delivery.
CREATE TABLE provider_statuses (
    provider_message_id text PRIMARY KEY,
    status smallint NOT NULL,
    error_code text NOT NULL DEFAULT '',
    error_message text NOT NULL DEFAULT '',
    occurred_time timestamptz NOT NULL,
    update_time timestamptz NOT NULL DEFAULT now()
);

-- Outcome events (ReplyDelivered, DeliveryFailed), written in the transaction that decides
-- them and relayed to Kafka afterwards: none is lost if the broker or the process is down.
CREATE TABLE outcome_events (
    id uuid PRIMARY KEY,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    topic text NOT NULL,
    record_key text NOT NULL,
    event_type text NOT NULL,
    payload bytea NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    published_time timestamptz
);

CREATE INDEX outcome_events_pending ON outcome_events (seq) WHERE published_time IS NULL;

-- A delivery as the API shows it: the row plus its parts' provider ids, in part order.
CREATE VIEW delivery_view AS
SELECT d.*,
       COALESCE((SELECT array_agg(p.provider_message_id ORDER BY p.part_no) FROM delivery_parts p
                 WHERE p.delivery_id = d.id AND p.provider_message_id IS NOT NULL), '{}') AS provider_message_ids
FROM deliveries d;
