-- Archived instances, as migrations/postgres/0009_instance_archived.sql.
ALTER TABLE instances ADD COLUMN archived INTEGER NOT NULL DEFAULT 0 CHECK (archived IN (0, 1));
