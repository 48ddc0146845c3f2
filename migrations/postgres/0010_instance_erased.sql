-- Erased instances (EraseInstance, the right to erasure): the instance's payloads, metadata,
-- states and snapshots are destroyed and its external id replaced, in the transaction that
-- records its `InstanceErased` event. What remains is the fact that it existed (id, versions,
-- event types, timestamps); the flag makes every later write and time travel refuse it.
-- A constant default adds the column without rewriting the table.
ALTER TABLE instances ADD COLUMN erased boolean NOT NULL DEFAULT false;
