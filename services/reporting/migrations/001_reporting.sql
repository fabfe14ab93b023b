-- Reporting's projections of all three topics. Each is a keyed upsert or a sum over facts,
-- so the order in which the topics are read does not change them.

-- Every event of every service, as published: history, audit, and "as of" answers.
CREATE TABLE history (
    event_id        uuid PRIMARY KEY,
    pilot_id        text        NOT NULL,
    family_id       text,
    stream_id       text        NOT NULL,
    stream_version  integer     NOT NULL,
    type            text        NOT NULL,
    source          text        NOT NULL,
    recorded_at     timestamptz NOT NULL,
    occurred_at     timestamptz NOT NULL,
    envelope        jsonb       NOT NULL
);
CREATE INDEX history_by_family ON history (pilot_id, family_id, recorded_at, source, stream_version);
CREATE INDEX history_by_type ON history (pilot_id, type);

CREATE TABLE family_view (
    pilot_id     text NOT NULL,
    family_id    text NOT NULL,
    team         text NOT NULL,
    arm          text NOT NULL,
    stratum      text,
    enrolled_on  date NOT NULL,
    PRIMARY KEY (pilot_id, family_id)
);

CREATE TABLE pilot_view (
    pilot_id  text    PRIMARY KEY,
    version   integer NOT NULL,
    config    jsonb   NOT NULL
);
