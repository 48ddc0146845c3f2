-- Declared event types (payload schemas, CEL transforms and guards, strict mode) are part of a
-- schema version: each version keeps its own, and the type's row holds the current version's.
-- NULL declares none. The JSON is the server's `DeclarationsDoc`.
ALTER TABLE entity_types ADD COLUMN declarations jsonb;
ALTER TABLE entity_type_schemas ADD COLUMN declarations jsonb;
