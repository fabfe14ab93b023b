-- What spending knows of other services (consumed from their topics) and lookups of its own.
CREATE TABLE pilot_view (
    pilot_id  text PRIMARY KEY,
    version   integer NOT NULL,
    config    jsonb   NOT NULL
);
CREATE TABLE family_view (
    pilot_id        text    NOT NULL,
    family_id       text    NOT NULL,
    team            text    NOT NULL,
    arm             text    NOT NULL,
    enrolled_on     date    NOT NULL,
    pilot_version   integer NOT NULL,
    exited_on       date,
    stream_version  integer NOT NULL,
    PRIMARY KEY (pilot_id, family_id)
);
CREATE TABLE decision_view (
    request_id      uuid PRIMARY KEY,
    outcome         text   NOT NULL,
    approved_pence  bigint NOT NULL DEFAULT 0,
    decided_at      timestamptz
);
-- Written by spending's own commands, in their transactions.
CREATE TABLE request_index (
    request_id  uuid PRIMARY KEY,
    pilot_id    text NOT NULL,
    family_id   text NOT NULL,
    team        text NOT NULL
);
CREATE TABLE purchase_index (
    purchase_id  uuid PRIMARY KEY,
    pilot_id     text NOT NULL,
    request_id   uuid NOT NULL
);
