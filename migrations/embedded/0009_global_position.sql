-- The global event log, as migrations/postgres/0012_global_position.sql: every event's
-- position, strictly increasing in commit order. The single writer draws it as one more than
-- the highest so far, inside its transaction, so commit order is position order.
ALTER TABLE events ADD COLUMN position INTEGER;

-- Existing events, in recorded order.
UPDATE events SET position = o.rn
FROM (SELECT instance_id, version,
             row_number() OVER (ORDER BY recorded_at, instance_id, version) AS rn
      FROM events) o
WHERE events.instance_id = o.instance_id AND events.version = o.version;

CREATE UNIQUE INDEX events_position ON events (position);

-- The highest position retention ever deleted (see the PostgreSQL migration).
ALTER TABLE retention_horizon ADD COLUMN dropped_through INTEGER NOT NULL DEFAULT 0;
