-- The agent's own data: conversations, tickets, messages, and the inbound messages already handled.

CREATE TABLE conversations (
    id text PRIMARY KEY,
    customer text NOT NULL,
    state text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'closed')),
    create_time timestamptz NOT NULL DEFAULT now(),
    last_activity_time timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX conversations_customer_idx ON conversations (customer, last_activity_time DESC);

CREATE TABLE tickets (
    id text PRIMARY KEY,
    customer text NOT NULL,
    conversation_id text NOT NULL REFERENCES conversations (id),
    channel smallint NOT NULL,
    subject text NOT NULL DEFAULT '',
    category smallint NOT NULL DEFAULT 0,
    priority smallint NOT NULL DEFAULT 0,
    status smallint NOT NULL,
    escalation_reason smallint NOT NULL DEFAULT 0,
    escalation_detail text NOT NULL DEFAULT '',
    sentiment double precision NOT NULL DEFAULT 0,
    assignee text NOT NULL DEFAULT '',
    resolution_note text NOT NULL DEFAULT '',
    version bigint NOT NULL DEFAULT 1,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    first_response_time timestamptz,
    resolve_time timestamptz
);
CREATE INDEX tickets_list_idx ON tickets (create_time DESC, id DESC);
CREATE INDEX tickets_customer_idx ON tickets (customer, create_time DESC);
CREATE INDEX tickets_conversation_idx ON tickets (conversation_id, create_time DESC);

CREATE TABLE messages (
    id bigserial PRIMARY KEY,
    conversation_id text NOT NULL REFERENCES conversations (id),
    ticket_id text NOT NULL REFERENCES tickets (id),
    customer text NOT NULL,
    author smallint NOT NULL,
    channel smallint NOT NULL,
    text text NOT NULL,
    -- Outbound only: the notifier idempotency key, its delivery and where it is.
    request_id text UNIQUE,
    delivery text NOT NULL DEFAULT '',
    delivery_status smallint NOT NULL DEFAULT 0,
    create_time timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX messages_ticket_idx ON messages (ticket_id, id);
CREATE INDEX messages_customer_idx ON messages (customer, id DESC);

-- One row per inbound provider message: the de-duplication key and how far its handling got.
-- state: 'received' (message and ticket stored), 'decided' (reply stored), 'replied' (notifier accepted it).
CREATE TABLE inbound (
    channel smallint NOT NULL,
    channel_message_id text NOT NULL,
    ticket_id text NOT NULL REFERENCES tickets (id),
    message_id bigint NOT NULL REFERENCES messages (id),
    reply_message_id bigint REFERENCES messages (id),
    state text NOT NULL DEFAULT 'received' CHECK (state IN ('received', 'decided', 'replied')),
    decision jsonb,
    -- Where and how to answer: recipient, subject, email thread, received time (for staff replies).
    reply_context jsonb NOT NULL DEFAULT '{}',
    received_time timestamptz NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel, channel_message_id)
);
CREATE INDEX inbound_ticket_idx ON inbound (ticket_id);
