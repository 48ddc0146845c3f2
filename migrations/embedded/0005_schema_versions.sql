-- Schema versions, as migrations/postgres/0008_schema_versions.sql: a type's schema changes
-- only by adding a version, every version is kept, and every event records the version that
-- validated the state after it.
ALTER TABLE entity_types ADD COLUMN schema_version INTEGER NOT NULL DEFAULT 1;

CREATE TABLE entity_type_schemas (
    entity_type_id TEXT NOT NULL REFERENCES entity_types (id),
    version        INTEGER NOT NULL CHECK (version >= 1),
    schema         TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (entity_type_id, version)
) STRICT;
INSERT INTO entity_type_schemas (entity_type_id, version, schema, created_at)
SELECT id, 1, schema, created_at FROM entity_types;

ALTER TABLE events ADD COLUMN schema_version INTEGER NOT NULL DEFAULT 1;
