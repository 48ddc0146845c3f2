-- Declared event types, as migrations/postgres/0014_event_declarations.sql: each schema version
-- keeps its own declarations (JSON text), the type's row the current version's; NULL declares none.
ALTER TABLE entity_types ADD COLUMN declarations TEXT;
ALTER TABLE entity_type_schemas ADD COLUMN declarations TEXT;
