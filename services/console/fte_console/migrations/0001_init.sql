-- Staff accounts, their sessions and the audit trail of what each did. The console owns nothing
-- else: tickets, customers and articles stay with their services.
CREATE TABLE staff_users (
    id uuid PRIMARY KEY,
    username text NOT NULL UNIQUE,
    password_hash text NOT NULL,
    role text NOT NULL CHECK (role IN ('agent', 'admin')),
    failed_logins integer NOT NULL DEFAULT 0,
    locked_until timestamptz,
    create_time timestamptz NOT NULL DEFAULT now()
);

-- Only a digest of each session token is stored: a copy of the table signs nobody in.
CREATE TABLE staff_sessions (
    token_digest bytea PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES staff_users (id) ON DELETE CASCADE,
    csrf_token text NOT NULL,
    expire_time timestamptz NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX staff_sessions_expire ON staff_sessions (expire_time);

CREATE TABLE audit_log (
    id bigserial PRIMARY KEY,
    actor text NOT NULL,
    action text NOT NULL,
    target text NOT NULL DEFAULT '',
    detail jsonb NOT NULL DEFAULT '{}',
    create_time timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_target ON audit_log (target, create_time);
