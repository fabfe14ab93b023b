-- The event store, the transactional outbox, idempotency keys and consumer tracking:
-- the same tables in every service's database.

CREATE TABLE events (
    position        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        uuid        NOT NULL UNIQUE,
    stream_id       text        NOT NULL,
    stream_version  integer     NOT NULL CHECK (stream_version > 0),
    type            text        NOT NULL,
    pilot_id        text        NOT NULL,
    family_id       text,
    recorded_at     timestamptz NOT NULL,
    envelope        jsonb       NOT NULL,
    UNIQUE (stream_id, stream_version)
);
CREATE INDEX events_by_family ON events (pilot_id, family_id, position);

-- Events are facts: the application never changes or removes one.
CREATE FUNCTION events_are_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are immutable (% on stream %)', TG_OP, OLD.stream_id
        USING ERRCODE = 'integrity_constraint_violation';
END $$;
CREATE TRIGGER events_immutable BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_immutable();

-- Positions of committed events not yet on Kafka. See shared/outbox.py for why a table.
CREATE TABLE outbox (
    position bigint PRIMARY KEY REFERENCES events (position)
);

CREATE TABLE idempotency_keys (
    scope        text        NOT NULL,
    key          text        NOT NULL,
    fingerprint  text        NOT NULL,
    status       integer,
    body         jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);

-- Where each consumer has got to in each partition, written with its effects.
CREATE TABLE consumer_offsets (
    consumer     text    NOT NULL,
    topic        text    NOT NULL,
    partition    integer NOT NULL,
    next_offset  bigint  NOT NULL,
    PRIMARY KEY (consumer, topic, partition)
);

-- The last version of each stream a consumer applied: drops redeliveries, exposes gaps.
CREATE TABLE consumer_streams (
    consumer   text    NOT NULL,
    stream_id  text    NOT NULL,
    version    integer NOT NULL,
    PRIMARY KEY (consumer, stream_id)
);

-- Records a consumer could not apply, and the later records of the same key held behind them.
CREATE TABLE consumer_parked (
    consumer    text        NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    "offset"    bigint      NOT NULL,
    record_key  text        NOT NULL,
    value       bytea       NOT NULL,
    error       text        NOT NULL,
    parked_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, topic, partition, "offset")
);
CREATE INDEX consumer_parked_by_key ON consumer_parked (consumer, topic, record_key, "offset");
