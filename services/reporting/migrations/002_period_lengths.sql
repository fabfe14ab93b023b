-- Every period_months the pilot has had, each with the day it applies from (pilot.configured
-- version 3). Rows from before read as '[]': their config's period_months, since always.
ALTER TABLE pilot_view ADD COLUMN period_lengths jsonb NOT NULL DEFAULT '[]'::jsonb;
