-- Archived instances (ArchiveInstance / RestoreInstance, both events in the history): an
-- archived instance refuses writes and is left out of ListInstances unless asked for. The flag
-- moves with the head, in the transaction of the event that changes it.
-- A constant default adds the column without rewriting the table.
ALTER TABLE instances ADD COLUMN archived boolean NOT NULL DEFAULT false;
