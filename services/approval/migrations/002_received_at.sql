-- When approval recorded each request, on approval's own clock: a decision's time to
-- decide is its decided_at less this, two readings of one clock. NULL for a request
-- recorded before it was kept.
ALTER TABLE requests ADD COLUMN received_at timestamptz;
