-- Every event id is reserved, not only the ones clients chose, and each key keeps a hash of
-- its event's content (event type, mode, canonical payload) so a faithful retry is recognised
-- without loading the recorded payload. NULL for keys recorded before.
ALTER TABLE event_ids ADD COLUMN content_hash BLOB;

INSERT OR IGNORE INTO event_ids (event_id, instance_id, version)
SELECT event_id, instance_id, version FROM events;
