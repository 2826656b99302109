-- Customers and their identifiers, merge/erasure audit, one-time verification codes, and the
-- transactional outbox of events for fte.customers.changed.

CREATE TABLE customers (
    id uuid PRIMARY KEY,
    display_name text NOT NULL DEFAULT '',
    state text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'merged', 'erased')),
    merged_into uuid REFERENCES customers (id),
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    CHECK ((state = 'merged') = (merged_into IS NOT NULL))
);
-- ListCustomers pages newest first.
CREATE INDEX customers_listing ON customers (create_time DESC, id DESC) WHERE state <> 'merged';

-- kind: the IdentifierKind enum number. value: the normalised form; raw_value: as first given.
CREATE TABLE identifiers (
    id bigserial PRIMARY KEY,
    customer_id uuid NOT NULL REFERENCES customers (id),
    kind smallint NOT NULL CHECK (kind BETWEEN 1 AND 4),
    value text NOT NULL CHECK (length(value) BETWEEN 1 AND 340),
    raw_value text NOT NULL,
    verified boolean NOT NULL DEFAULT false,
    create_time timestamptz NOT NULL DEFAULT now(),
    verify_time timestamptz
);
-- One owner per identifier: the customer that proved it. This constraint is what makes
-- concurrent resolve-or-create of a new identifier yield exactly one customer.
CREATE UNIQUE INDEX identifiers_owner ON identifiers (kind, value) WHERE verified;
-- Claims (unverified) do not own the identifier: several customers may claim one, once each.
CREATE UNIQUE INDEX identifiers_per_customer ON identifiers (customer_id, kind, value);

CREATE TABLE merges (
    id bigserial PRIMARY KEY,
    source_customer uuid NOT NULL REFERENCES customers (id),
    target_customer uuid NOT NULL REFERENCES customers (id),
    actor text NOT NULL,
    reason text NOT NULL,
    request_id text UNIQUE,
    merge_time timestamptz NOT NULL DEFAULT now(),
    CHECK (source_customer <> target_customer)
);

CREATE TABLE erasures (
    customer_id uuid PRIMARY KEY REFERENCES customers (id),
    actor text NOT NULL,
    reason text NOT NULL,
    erase_time timestamptz NOT NULL DEFAULT now()
);

-- Only a keyed hash of each code is stored. A new code for an identifier supersedes older ones.
CREATE TABLE verification_codes (
    id bigserial PRIMARY KEY,
    identifier_id bigint NOT NULL REFERENCES identifiers (id) ON DELETE CASCADE,
    code_hash bytea NOT NULL,
    salt bytea NOT NULL,
    expire_time timestamptz NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL,
    used_time timestamptz,
    superseded boolean NOT NULL DEFAULT false,
    create_time timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX verification_codes_identifier ON verification_codes (identifier_id, id DESC);

-- Events written in the same transaction as the change they announce; a relay publishes them.
CREATE TABLE outbox (
    id bigserial PRIMARY KEY,
    topic text NOT NULL,
    record_key text NOT NULL,
    event_id uuid NOT NULL UNIQUE,
    event_type text NOT NULL,
    payload bytea NOT NULL,
    correlation_id text,
    create_time timestamptz NOT NULL DEFAULT now(),
    publish_time timestamptz,
    attempts integer NOT NULL DEFAULT 0
);
CREATE INDEX outbox_pending ON outbox (id) WHERE publish_time IS NULL;
