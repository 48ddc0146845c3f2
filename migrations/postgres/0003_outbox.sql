-- The transactional outbox: one row per committed event, written in the event's transaction when
-- publication is enabled, deleted by the relay once NATS JetStream acknowledged the event.
-- Ordered by id, which grows in commit order within an instance (appends lock the instance row).
CREATE TABLE outbox (
    id          bigserial PRIMARY KEY,
    instance_id uuid NOT NULL,
    version     bigint NOT NULL
);
