-- Outbox entries the relay gave up on: refused by JetStream OUTBOX_MAX_ATTEMPTS times, or too
-- large for the NATS server's max_payload. Moving them here keeps one event from holding up
-- publication; the event itself stays in `events`, this table says which ones never reached the
-- stream and why, so they can be re-published by hand (insert the row back into `outbox`).
CREATE TABLE outbox_dead_letters (
    id          bigint PRIMARY KEY,              -- its id in `outbox`
    instance_id uuid NOT NULL,
    version     bigint NOT NULL,
    attempts    integer NOT NULL,
    error       text NOT NULL,
    dead_at     timestamptz NOT NULL DEFAULT now()
);
