-- Schema versions: a type's schema changes only by adding a version (UpdateEntityType), and
-- every event records the version that validated the state after it.
-- `entity_types.schema` stays the current schema, `schema_version` its number; every version
-- ever accepted, the current one included, is kept in `entity_type_schemas`.
ALTER TABLE entity_types ADD COLUMN schema_version bigint NOT NULL DEFAULT 1;

CREATE TABLE entity_type_schemas (
    entity_type_id uuid NOT NULL REFERENCES entity_types (id),
    version        bigint NOT NULL CHECK (version >= 1),
    schema         jsonb NOT NULL,
    created_at     timestamptz NOT NULL,
    PRIMARY KEY (entity_type_id, version)
);
INSERT INTO entity_type_schemas (entity_type_id, version, schema, created_at)
SELECT id, 1, schema, created_at FROM entity_types;

-- Events recorded before versions existed were validated against the only schema there was.
-- A constant default adds the column without rewriting the table, and TimescaleDB accepts it
-- on compressed hypertables.
ALTER TABLE events ADD COLUMN schema_version bigint NOT NULL DEFAULT 1;
