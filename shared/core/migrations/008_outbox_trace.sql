-- The trace an event was recorded in (W3C traceparent), published with it as a Kafka header.
ALTER TABLE outbox ADD COLUMN traceparent text;
