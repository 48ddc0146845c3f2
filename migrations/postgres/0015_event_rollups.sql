-- Hourly event counts per entity type and event type, by occurred_at (the time analytics bucket
-- by), kept by triggers in the transaction of every statement that inserts, deletes or moves
-- events: appends, group commits, creations, retention, corrections made in SQL. Event counts, time series and summaries add whole
-- hours from here to the raw events of the partial hours at a range's edges, so their answers
-- equal the raw-event answers exactly while reading a row per hour instead of one per event.
--
-- `shard` is the writing backend's process id. One backend runs one transaction at a time, so
-- two transactions never update the same row and never wait for each other here, however many
-- replicas append to one entity type in one hour: a single row per hour would serialize every
-- replica's commits on its row lock. The rows of an hour number at most the connections that
-- wrote in it; readers sum them. Deletes add negative counts the same way.
--
-- Where TimescaleDB made `events` a hypertable this does nothing: hypertables take no
-- statement triggers with transition tables, and the hourly continuous aggregate
-- (adapters/postgres/timescale.rs) serves those reads instead.
CREATE TABLE event_rollups (
    entity_type_id uuid        NOT NULL,
    hour           timestamptz NOT NULL,
    event_type     text        NOT NULL,
    shard          integer     NOT NULL,
    events         bigint      NOT NULL,
    PRIMARY KEY (entity_type_id, hour, event_type, shard)
);

CREATE FUNCTION event_rollups_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO event_rollups AS r (entity_type_id, hour, event_type, shard, events)
        SELECT entity_type_id, date_bin('1 hour', occurred_at, timestamptz 'epoch'), event_type,
               pg_backend_pid(), count(*)
        FROM rollup_new GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (entity_type_id, hour, event_type, shard)
        DO UPDATE SET events = r.events + excluded.events;
    ELSE
        INSERT INTO event_rollups AS r (entity_type_id, hour, event_type, shard, events)
        SELECT entity_type_id, date_bin('1 hour', occurred_at, timestamptz 'epoch'), event_type,
               pg_backend_pid(), -count(*)
        FROM rollup_old GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (entity_type_id, hour, event_type, shard)
        DO UPDATE SET events = r.events + excluded.events;
    END IF;
    RETURN NULL;
END
$$;

-- Events are immutable, but an operator's correction of an event's type or time in SQL still
-- moves its count (one row at a time: a statement trigger with a column list cannot see the
-- rows, and erasure's updates of payloads must not pay for this).
CREATE FUNCTION event_rollups_move() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO event_rollups AS r (entity_type_id, hour, event_type, shard, events)
    VALUES (OLD.entity_type_id, date_bin('1 hour', OLD.occurred_at, timestamptz 'epoch'),
            OLD.event_type, pg_backend_pid(), -1)
    ON CONFLICT (entity_type_id, hour, event_type, shard)
    DO UPDATE SET events = r.events + excluded.events;
    INSERT INTO event_rollups AS r (entity_type_id, hour, event_type, shard, events)
    VALUES (NEW.entity_type_id, date_bin('1 hour', NEW.occurred_at, timestamptz 'epoch'),
            NEW.event_type, pg_backend_pid(), 1)
    ON CONFLICT (entity_type_id, hour, event_type, shard)
    DO UPDATE SET events = r.events + excluded.events;
    RETURN NULL;
END
$$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        CREATE TRIGGER event_rollups_insert AFTER INSERT ON events
            REFERENCING NEW TABLE AS rollup_new
            FOR EACH STATEMENT EXECUTE FUNCTION event_rollups_count();
        CREATE TRIGGER event_rollups_delete AFTER DELETE ON events
            REFERENCING OLD TABLE AS rollup_old
            FOR EACH STATEMENT EXECUTE FUNCTION event_rollups_count();
        CREATE TRIGGER event_rollups_update
            AFTER UPDATE OF entity_type_id, event_type, occurred_at ON events
            FOR EACH ROW
            WHEN (OLD.entity_type_id IS DISTINCT FROM NEW.entity_type_id
                  OR OLD.event_type IS DISTINCT FROM NEW.event_type
                  OR OLD.occurred_at IS DISTINCT FROM NEW.occurred_at)
            EXECUTE FUNCTION event_rollups_move();
        INSERT INTO event_rollups (entity_type_id, hour, event_type, shard, events)
        SELECT entity_type_id, date_bin('1 hour', occurred_at, timestamptz 'epoch'), event_type,
               0, count(*)
        FROM events GROUP BY 1, 2, 3;
    END IF;
END
$$;
