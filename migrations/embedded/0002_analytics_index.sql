-- Analytics read four columns of the events of one entity type: occurred_at (ranges, buckets,
-- first and last), event_type (counts, the summary's types) and instance_id (most active). An
-- index holding all four answers every aggregate from the index alone, without reading the
-- table rows and their payloads (about 5x faster on 500,000 events). It keeps the prefix of
-- the index it replaces, so the seeks by (entity_type_id, occurred_at) are unchanged.
DROP INDEX events_type_occurred_at;
CREATE INDEX events_type_analytics ON events (entity_type_id, occurred_at, event_type, instance_id);
