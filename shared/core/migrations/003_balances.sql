-- A family's money per budget period, as the facts of all three topics add up
-- (shared/balances.py). Approval decides from it; allocation and reporting read it.
CREATE TABLE balances (
    pilot_id         text    NOT NULL,
    family_id        text    NOT NULL,
    period_start     date    NOT NULL,
    period_end       date    NOT NULL,
    allocated_pence  bigint  NOT NULL DEFAULT 0,
    held_pence       bigint  NOT NULL DEFAULT 0,
    spent_pence      bigint  NOT NULL DEFAULT 0,
    PRIMARY KEY (pilot_id, family_id, period_start)
);
