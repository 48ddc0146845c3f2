-- Hourly event counts per entity type and event type, by occurred_at (the time analytics bucket
-- by), kept by triggers in the transaction of every insert, delete or move of an event:
-- appends, creations, retention, corrections made in SQL. Event counts, time series and
-- summaries add whole hours from here to the raw events of the partial hours at a range's
-- edges, so their answers equal the raw-event answers exactly while reading a row per hour
-- instead of one per event. One writer, so one row per hour. `hour` is occurred_at in Unix
-- microseconds rounded down to the hour (also before 1970).
CREATE TABLE event_rollups (
    entity_type_id TEXT    NOT NULL,
    hour           INTEGER NOT NULL,
    event_type     TEXT    NOT NULL,
    events         INTEGER NOT NULL,
    PRIMARY KEY (entity_type_id, hour, event_type)
) WITHOUT ROWID;

CREATE TRIGGER event_rollups_insert AFTER INSERT ON events
BEGIN
    INSERT INTO event_rollups (entity_type_id, hour, event_type, events)
    VALUES (NEW.entity_type_id,
            NEW.occurred_at - (((NEW.occurred_at % 3600000000) + 3600000000) % 3600000000),
            NEW.event_type, 1)
    ON CONFLICT (entity_type_id, hour, event_type) DO UPDATE SET events = events + 1;
END;

CREATE TRIGGER event_rollups_delete AFTER DELETE ON events
BEGIN
    UPDATE event_rollups SET events = events - 1
    WHERE entity_type_id = OLD.entity_type_id
      AND hour = OLD.occurred_at - (((OLD.occurred_at % 3600000000) + 3600000000) % 3600000000)
      AND event_type = OLD.event_type;
END;

-- Events are immutable, but an operator's correction of an event's type or time in SQL still
-- moves its count.
CREATE TRIGGER event_rollups_update
AFTER UPDATE OF entity_type_id, event_type, occurred_at ON events
BEGIN
    UPDATE event_rollups SET events = events - 1
    WHERE entity_type_id = OLD.entity_type_id
      AND hour = OLD.occurred_at - (((OLD.occurred_at % 3600000000) + 3600000000) % 3600000000)
      AND event_type = OLD.event_type;
    INSERT INTO event_rollups (entity_type_id, hour, event_type, events)
    VALUES (NEW.entity_type_id,
            NEW.occurred_at - (((NEW.occurred_at % 3600000000) + 3600000000) % 3600000000),
            NEW.event_type, 1)
    ON CONFLICT (entity_type_id, hour, event_type) DO UPDATE SET events = events + 1;
END;

INSERT INTO event_rollups (entity_type_id, hour, event_type, events)
SELECT entity_type_id, occurred_at - (((occurred_at % 3600000000) + 3600000000) % 3600000000) AS h,
       event_type, count(*)
FROM events WHERE true GROUP BY entity_type_id, h, event_type;
