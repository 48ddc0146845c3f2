-- ListInstances for real lists. Most recently updated first, and a range of last updates, are a
-- walk of this index within one entity type (ties by id, the page cursor's second half).
CREATE INDEX instances_type_updated ON instances (entity_type_id, updated_at, id);
-- Equality on a state field: the listing adds the equivalent containment (`state @> {...}`),
-- which this index answers, then checks the field exactly. jsonb_path_ops: smaller and cheaper
-- to maintain than the default operator class, and containment is all it is used for.
CREATE INDEX instances_state ON instances USING gin (state jsonb_path_ops);
