-- Keys that seal a family's free text (notes, reasons, purposes). Erasing a family deletes
-- its keys: the events keep their ciphertext, amounts and hash chains, but the text is gone.
CREATE TABLE personal_keys (
    key_id      uuid PRIMARY KEY,
    subject     text        NOT NULL,
    key         bytea,
    created_at  timestamptz NOT NULL DEFAULT now(),
    erased_at   timestamptz
);
CREATE UNIQUE INDEX personal_keys_live ON personal_keys (subject) WHERE key IS NOT NULL;
