-- The global event log (QueryService.ReadEvents, Subscribe from a position): every event gets a
-- position, strictly increasing in commit order across the whole store.
--
-- A sequence alone would not do: two transactions draw 5 and 6, 6 commits first, and a reader
-- that saw 6 moves past 5 before it commits. So every transaction that writes events draws
-- their positions last, under a transaction-level advisory lock (key 0x74656d70_53544550,
-- "tempSTEP") taken right before the draw and released by the commit: the lock is held only
-- through the draw and the commit, and positions are handed out in the order transactions
-- commit, on every replica sharing the database. Rows are inserted with a NULL position and
-- numbered by that last statement (the partial index finds them).
CREATE SEQUENCE events_position_seq AS bigint;
ALTER TABLE events ADD COLUMN position bigint;

-- Existing events, in recorded order (an instance's versions never go back in recorded time,
-- so each instance's versions keep their order).
UPDATE events e SET position = o.rn
FROM (SELECT instance_id, version,
             row_number() OVER (ORDER BY recorded_at, instance_id, version) AS rn
      FROM events) o
WHERE e.instance_id = o.instance_id AND e.version = o.version;
SELECT setval('events_position_seq', COALESCE((SELECT max(position) FROM events), 0) + 1, false);

CREATE INDEX events_position ON events (position);
CREATE INDEX events_unpositioned ON events (instance_id, version) WHERE position IS NULL;

-- The highest position retention ever deleted: a reader asking to start before it would miss
-- events, so it is told OUT_OF_RANGE instead.
ALTER TABLE retention_horizon ADD COLUMN dropped_through bigint NOT NULL DEFAULT 0;
