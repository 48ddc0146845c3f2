-- Retention (RETENTION_DAYS): events recorded before the horizon are dropped, except what
-- rebuilding each current state needs (a snapshot at the last version recorded before the
-- horizon, and that version's event). One row holds the horizon in force: time travel before it
-- answers OUT_OF_RANGE, analytics report it as the start of what they cover. It only moves
-- forward, and is written before anything is deleted, so a reader never mistakes a dropped
-- version for one that never existed. No row: nothing was ever dropped.
CREATE TABLE retention_horizon (
    id      boolean PRIMARY KEY DEFAULT true CHECK (id),
    horizon timestamptz NOT NULL
);
