-- What approval knows of allocation and spending, kept by its consumer.
CREATE TABLE policy_view (
    pilot_id  text    NOT NULL,
    version   integer NOT NULL,
    config    jsonb   NOT NULL,
    PRIMARY KEY (pilot_id, version)
);
CREATE TABLE family_view (
    pilot_id        text    NOT NULL,
    family_id       text    NOT NULL,
    team            text    NOT NULL,
    stream_version  integer NOT NULL,
    PRIMARY KEY (pilot_id, family_id)
);
-- Each spend request as approval sees it; 'waiting' until the views it depends on catch up.
CREATE TABLE requests (
    request_id          uuid PRIMARY KEY,
    pilot_id            text        NOT NULL,
    family_id           text        NOT NULL,
    team                text        NOT NULL,
    amount_pence        bigint      NOT NULL,
    category            text        NOT NULL,
    requested_by        text        NOT NULL,
    family_involved     boolean     NOT NULL,
    policy_version      integer     NOT NULL,
    allocation_version  integer     NOT NULL,
    period_start        date        NOT NULL,
    period_end          date        NOT NULL,
    requested_at        timestamptz NOT NULL,
    status              text        NOT NULL,
    approved_pence      bigint      NOT NULL DEFAULT 0,
    purchased_pence     bigint      NOT NULL DEFAULT 0,
    decided_at          timestamptz
);
CREATE INDEX requests_waiting ON requests (pilot_id, family_id) WHERE status = 'waiting';
CREATE INDEX requests_by_status ON requests (pilot_id, status, requested_at);
