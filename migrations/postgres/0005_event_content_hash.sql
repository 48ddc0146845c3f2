-- Every event id is reserved, not only the ones clients chose: a client that later sends a
-- server-generated id gets a retry or ALREADY_EXISTS, never a second event with that id (which
-- JetStream, de-duplicating by id, would drop). Each key keeps a hash of its event's content
-- (event type, mode, canonical payload), so a faithful retry is recognised whatever jsonb made
-- of its numbers, without loading the recorded payload. NULL for keys recorded before.
ALTER TABLE event_ids ADD COLUMN content_hash bytea;

INSERT INTO event_ids (event_id, instance_id, version)
SELECT event_id, instance_id, version FROM events
ON CONFLICT (event_id) DO NOTHING;
