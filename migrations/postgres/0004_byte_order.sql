-- Listings page by name and external id: order them by bytes, whatever the database's collation,
-- so page order (and the cursors) are the same on every PostgreSQL and on the embedded store.
ALTER TABLE entity_types ALTER COLUMN name TYPE text COLLATE "C";
ALTER TABLE instances ALTER COLUMN external_id TYPE text COLLATE "C";
