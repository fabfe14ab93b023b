-- Sealing keys are kept only wrapped under a key-encryption key held outside the database
-- (shared/core/custody.py): `wrapped` and the id of the KEK that wraps it. Keys stored
-- unwrapped by earlier versions (`key`) are wrapped when a service starts, and `key` is
-- cleared; copies of them in WAL and backups from before stay readable until those expire
-- (the README's Security section). A live key is one whose `wrapped` is set.
ALTER TABLE personal_keys ADD COLUMN wrapped bytea, ADD COLUMN kek_id text;
DROP INDEX personal_keys_live;
CREATE UNIQUE INDEX personal_keys_live ON personal_keys (subject)
    WHERE wrapped IS NOT NULL OR key IS NOT NULL;
