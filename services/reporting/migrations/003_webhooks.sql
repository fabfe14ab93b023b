-- Webhook subscriptions of case systems, and the deliveries made to them from the topics.
-- A subscription's signing secret is kept only sealed, under a key of its own in
-- personal_keys (subject 'webhook:<id>'): key rotation re-wraps it with every other key, and
-- removing the subscription erases it.
CREATE TABLE webhook_subscriptions (
    subscription_id uuid PRIMARY KEY,
    pilot_id        text        NOT NULL,
    url             text        NOT NULL,
    event_types     text[]      NOT NULL,
    secret          text        NOT NULL,  -- sealed
    created_at      timestamptz NOT NULL,
    created_by      text        NOT NULL,
    removed_at      timestamptz
);
CREATE INDEX webhook_subscriptions_live ON webhook_subscriptions (pilot_id)
    WHERE removed_at IS NULL;

-- One row per event and subscription, in the order the webhooks consumer met them
-- (position). Each ordering key (the family, or the stream of an event of no family) is
-- delivered in position order: only the oldest pending delivery of a key is tried.
CREATE TABLE webhook_deliveries (
    position        bigserial   PRIMARY KEY,
    subscription_id uuid        NOT NULL REFERENCES webhook_subscriptions,
    event_id        uuid        NOT NULL,
    event_type      text        NOT NULL,
    ordering_key    text        NOT NULL,
    family_id       text,
    body            text        NOT NULL,  -- the CloudEvent as sent, signed as these bytes
    status          text        NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts        integer     NOT NULL DEFAULT 0,
    first_attempt_at timestamptz,
    next_attempt_at timestamptz,  -- null: as soon as it can be
    lease_until     timestamptz,
    delivered_at    timestamptz,
    last_error      text,
    UNIQUE (subscription_id, event_id)
);
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries
    (subscription_id, ordering_key, position) WHERE status = 'pending';
