-- Calls per principal and UTC day / month, for the principals whose token grant has a quota
-- (fte_runtime.quota): every replica adds its counts to these rows and reads the totals back.
CREATE TABLE quota_usage (
    principal text NOT NULL,
    period text NOT NULL CHECK (period IN ('day', 'month')),
    -- The first day of the period (for a month, its 1st).
    starts date NOT NULL,
    used bigint NOT NULL CHECK (used >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (principal, period, starts)
);
