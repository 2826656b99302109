-- Who did each staff action: `principal` is the authenticated caller (e.g. the console), `actor`
-- the staff member it named. Internal notes are staff-only text, never sent to a customer.
ALTER TABLE messages ADD COLUMN actor text NOT NULL DEFAULT '';

CREATE TABLE staff_actions (
    id bigserial PRIMARY KEY,
    ticket_id text NOT NULL REFERENCES tickets (id),
    action text NOT NULL,
    actor text NOT NULL,
    principal text NOT NULL,
    detail jsonb NOT NULL DEFAULT '{}',
    create_time timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX staff_actions_ticket_idx ON staff_actions (ticket_id, id);

CREATE TABLE notes (
    id bigserial PRIMARY KEY,
    ticket_id text NOT NULL REFERENCES tickets (id),
    text text NOT NULL,
    actor text NOT NULL,
    principal text NOT NULL,
    request_id text UNIQUE,
    create_time timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notes_ticket_idx ON notes (ticket_id, id);
