-- Where TimescaleDB is available, the event log becomes a hypertable partitioned by occurred_at,
-- the time analytics bucket by (so the hourly continuous aggregate can follow it). Elsewhere this
-- migration does nothing and the plain tables above serve every query.
-- A hypertable's unique indexes must contain the partitioning column, so (instance_id, version)
-- stays unique through the instances row's compare-and-set, and event ids through `event_ids`.
-- The continuous aggregate, compression and retention are set up by the server after migrating
-- (adapters/postgres/timescale.rs): a continuous aggregate cannot be created in a transaction.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') THEN
        CREATE EXTENSION IF NOT EXISTS timescaledb;
        ALTER TABLE events DROP CONSTRAINT events_pkey;
        CREATE UNIQUE INDEX events_instance_version ON events (instance_id, version, occurred_at);
        PERFORM create_hypertable('events', 'occurred_at', migrate_data => true);
    END IF;
END
$$;
