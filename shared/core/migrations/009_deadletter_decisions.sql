-- An operator may ask a consumer to try a parked record again now, or release one it cannot
-- apply (`ledger deadletters`); each such decision is kept here, never changed.
-- origin_key: the record's Kafka key as it came (a rejected record is parked under a key of
-- its own, so that it holds nothing back; earlier rows have none).
ALTER TABLE consumer_parked
    ADD COLUMN retry_requested boolean NOT NULL DEFAULT false,
    ADD COLUMN retried_at timestamptz,
    ADD COLUMN origin_key text;


CREATE INDEX consumer_parked_retry ON consumer_parked (consumer) WHERE retry_requested;

CREATE TABLE deadletter_decisions (
    decided_at  timestamptz NOT NULL DEFAULT now(),
    action      text        NOT NULL CHECK (action IN ('retry', 'release')),
    consumer    text        NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    "offset"    bigint      NOT NULL,
    record_key  text        NOT NULL,
    error       text        NOT NULL,
    decided_by  text        NOT NULL,
    reason      text        NOT NULL
);
CREATE FUNCTION deadletter_decisions_are_kept() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'dead-letter decisions are kept as made (%)', TG_OP
        USING ERRCODE = 'integrity_constraint_violation';
END $$;
CREATE TRIGGER deadletter_decisions_kept BEFORE UPDATE OR DELETE ON deadletter_decisions
    FOR EACH ROW EXECUTE FUNCTION deadletter_decisions_are_kept();
