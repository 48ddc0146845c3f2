-- The embedded store's schema: the same tables as migrations/postgres/0001_init.sql, in SQLite.
-- Timestamps are integer microseconds since the Unix epoch, JSON documents are TEXT, UUIDs are
-- TEXT in their lowercase hyphenated form (whose byte order is PostgreSQL's uuid order). STRICT
-- tables make SQLite refuse a value of the wrong type instead of storing it.

CREATE TABLE entity_types (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    schema      TEXT NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;

-- One row per instance. `version` is the compare-and-set guard of every append; appends run in
-- BEGIN IMMEDIATE transactions, so events of one instance are written one after another.
CREATE TABLE instances (
    id             TEXT PRIMARY KEY,
    entity_type_id TEXT NOT NULL REFERENCES entity_types (id),
    external_id    TEXT NOT NULL,
    state          TEXT NOT NULL,
    version        INTEGER NOT NULL CHECK (version >= 1),
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    UNIQUE (entity_type_id, external_id)
) STRICT;

CREATE TABLE events (
    instance_id    TEXT NOT NULL REFERENCES instances (id),
    version        INTEGER NOT NULL CHECK (version >= 1),
    event_id       TEXT NOT NULL,
    entity_type_id TEXT NOT NULL,
    event_type     TEXT NOT NULL,
    payload        TEXT NOT NULL,
    metadata       TEXT NOT NULL,
    mode           TEXT NOT NULL,
    recorded_at    INTEGER NOT NULL,
    occurred_at    INTEGER NOT NULL,
    PRIMARY KEY (instance_id, version)
) STRICT;

-- State at a time: the last version recorded at or before a moment.
CREATE INDEX events_instance_recorded_at ON events (instance_id, recorded_at, version);
-- Analytics per entity type follow occurred_at.
CREATE INDEX events_type_occurred_at ON events (entity_type_id, occurred_at);

-- Client-supplied idempotency keys, unique across all instances.
CREATE TABLE event_ids (
    event_id    TEXT PRIMARY KEY,
    instance_id TEXT NOT NULL,
    version     INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- The state right after `version`, written at every multiple of the snapshot interval.
CREATE TABLE snapshots (
    instance_id TEXT NOT NULL REFERENCES instances (id),
    version     INTEGER NOT NULL,
    state       TEXT NOT NULL,
    PRIMARY KEY (instance_id, version)
) STRICT;
