-- Each pilot's secret for the trial dataset's pseudonymous ids, kept only sealed (subject
-- 'trial:<pilot>' in personal_keys): key rotation re-wraps it with every other key.
CREATE TABLE trial_secrets (
    pilot_id text PRIMARY KEY,
    secret   text NOT NULL  -- sealed
);
