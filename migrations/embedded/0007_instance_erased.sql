-- Erased instances, as migrations/postgres/0010_instance_erased.sql.
ALTER TABLE instances ADD COLUMN erased INTEGER NOT NULL DEFAULT 0 CHECK (erased IN (0, 1));
