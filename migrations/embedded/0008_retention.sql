-- Retention, as migrations/postgres/0011_retention.sql: the horizon in force (microseconds since
-- the Unix epoch), one row at most, moved forward before anything older is deleted.
CREATE TABLE retention_horizon (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    horizon INTEGER NOT NULL
) STRICT;
