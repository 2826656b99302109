-- Outcome events carry the correlation id of the SendMessage that queued their delivery, and
-- count failed publish attempts, like every outbox relayed by the runtime.
ALTER TABLE deliveries ADD COLUMN correlation_id text;
ALTER TABLE outcome_events ADD COLUMN correlation_id text, ADD COLUMN attempts integer NOT NULL DEFAULT 0;

-- `d.*` was expanded when the view was made: make it again to include the new column.
DROP VIEW delivery_view;
CREATE VIEW delivery_view AS
SELECT d.*,
       COALESCE((SELECT array_agg(p.provider_message_id ORDER BY p.part_no) FROM delivery_parts p
                 WHERE p.delivery_id = d.id AND p.provider_message_id IS NOT NULL), '{}') AS provider_message_ids
FROM deliveries d;
