-- Which key-encryption keys each running instance of the service holds (shared/core/keyholders.py):
-- an erasure is complete only once no running process holds a KEK from before it.
CREATE TABLE key_holders (
    instance    uuid PRIMARY KEY,
    kek_ids     text[]      NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    seen_at     timestamptz NOT NULL DEFAULT now()
);
