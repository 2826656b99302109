-- The W3C trace context (traceparent, tracestate) of the SendMessage that queued a delivery, and of
-- the attempt that decided an outcome event: the dispatcher's provider calls and the relayed
-- outcome continue that trace (fte_runtime.tracing). NULL with tracing off.
ALTER TABLE deliveries ADD COLUMN trace_context jsonb;
ALTER TABLE outcome_events ADD COLUMN trace_context jsonb;

-- `d.*` was expanded when the view was made: make it again to include the new column.
DROP VIEW delivery_view;
CREATE VIEW delivery_view AS
SELECT d.*,
       COALESCE((SELECT array_agg(p.provider_message_id ORDER BY p.part_no) FROM delivery_parts p
                 WHERE p.delivery_id = d.id AND p.provider_message_id IS NOT NULL), '{}') AS provider_message_ids
FROM deliveries d;
