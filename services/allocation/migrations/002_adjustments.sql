-- Every adjustment and where it stands. A top-up is 'applied' when allocation records it; a
-- cut is 'pending' until approval's decision arrives on its topic ('accepted' or 'refused',
-- with the period's available balance after the decision). The period's allocation as
-- allocation knows it is what its stream gave, less the accepted cuts here.
CREATE TABLE adjustments (
    adjustment_id uuid PRIMARY KEY,
    pilot_id text NOT NULL,
    family_id text NOT NULL,
    period_start date NOT NULL,
    period_end date NOT NULL,
    delta_pence bigint NOT NULL,
    status text NOT NULL CHECK (status IN ('applied', 'pending', 'accepted', 'refused')),
    available_pence bigint,
    recorded_at timestamptz NOT NULL,
    decided_at timestamptz
);
CREATE INDEX adjustments_family ON adjustments (pilot_id, family_id, period_start);
