-- The Gmail mailbox's sync position: history.list starts from here.
CREATE TABLE gmail_mailbox (
    email_address text PRIMARY KEY,
    history_id bigint NOT NULL,
    watch_expiration timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Gmail messages already published, so overlapping syncs (push, sweep, stale-id fallback)
-- publish each message once. Pruned after 30 days.
CREATE TABLE gmail_published (
    message_id text PRIMARY KEY,
    published_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX gmail_published_at ON gmail_published (published_at);
