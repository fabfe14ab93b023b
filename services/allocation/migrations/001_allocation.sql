-- Allocation keeps its state in the event store (shared/migrations/001_core.sql) and folds
-- streams on demand; it has no tables of its own yet.
SELECT 1;
