-- The source of truth: entity types, instances (with their current state), the immutable
-- event log, client idempotency keys and periodic snapshots.

CREATE TABLE entity_types (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    description text NOT NULL DEFAULT '',
    schema      jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per instance. `version` is the compare-and-set guard of every append: appends lock
-- this row, so events of one instance are written one after another, 1..N without gaps.
CREATE TABLE instances (
    id             uuid PRIMARY KEY,
    entity_type_id uuid NOT NULL REFERENCES entity_types (id),
    external_id    text NOT NULL,
    state          jsonb NOT NULL,
    version        bigint NOT NULL CHECK (version >= 1),
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    UNIQUE (entity_type_id, external_id)
);

CREATE TABLE events (
    instance_id    uuid NOT NULL REFERENCES instances (id),
    version        bigint NOT NULL CHECK (version >= 1),
    event_id       text NOT NULL,
    entity_type_id uuid NOT NULL,
    event_type     text NOT NULL,
    payload        jsonb NOT NULL,
    metadata       jsonb NOT NULL,
    mode           text NOT NULL,
    recorded_at    timestamptz NOT NULL,
    occurred_at    timestamptz NOT NULL,
    PRIMARY KEY (instance_id, version)
);

-- State at a time: the last version recorded at or before a moment.
CREATE INDEX events_instance_recorded_at ON events (instance_id, recorded_at, version);
-- Analytics per entity type follow occurred_at.
CREATE INDEX events_type_occurred_at ON events (entity_type_id, occurred_at);

-- Client-supplied idempotency keys. Kept apart from `events` so that their uniqueness holds
-- even where `events` is a TimescaleDB hypertable (whose unique indexes must contain the time column).
CREATE TABLE event_ids (
    event_id    text PRIMARY KEY,
    instance_id uuid NOT NULL,
    version     bigint NOT NULL
);

-- The state right after `version`, written at every multiple of the snapshot interval, so a past
-- state costs one snapshot read plus at most interval - 1 events.
CREATE TABLE snapshots (
    instance_id uuid NOT NULL REFERENCES instances (id),
    version     bigint NOT NULL,
    state       jsonb NOT NULL,
    PRIMARY KEY (instance_id, version)
);
