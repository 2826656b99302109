-- The W3C trace context (traceparent, tracestate) of the request that wrote an outbox row, so the
-- relayed publish continues its trace (fte_runtime.tracing); NULL with tracing off.
ALTER TABLE outbox ADD COLUMN trace_context jsonb;
