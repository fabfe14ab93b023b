-- A parked record waits to be dead-lettered until the dead-letter topic has it: parking
-- commits with the batch, publishing follows, and a failure in between must not lose it.
ALTER TABLE consumer_parked ADD COLUMN deadletter_due boolean NOT NULL DEFAULT false;
CREATE INDEX consumer_parked_due ON consumer_parked (consumer) WHERE deadletter_due;
