-- The hash of the last event a consumer applied of each stream: the next must continue it
-- (its prev_hash), and a copy of the last must be the same event. Rows from before have none
-- and are checked from their next event on.
ALTER TABLE consumer_streams ADD COLUMN last_hash text;
