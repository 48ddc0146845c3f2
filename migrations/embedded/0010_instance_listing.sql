-- ListInstances for real lists: most recently updated first, and a range of last updates, are a
-- walk of this index within one entity type (ties by id, the page cursor's second half). An
-- equality on a state field has no index here: SQLite indexes only expressions named in
-- advance, so it is checked on the rows the other conditions select.
CREATE INDEX instances_type_updated ON instances (entity_type_id, updated_at, id);
