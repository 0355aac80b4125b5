-- The event store: one append-only table of facts.
CREATE TABLE events (
    -- position numbers events in insert order; it can commit out of order,
    -- so readers follow (transaction_id, position) below the snapshot xmin.
    position        bigint GENERATED ALWAYS AS IDENTITY,
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    event_id        uuid        NOT NULL PRIMARY KEY,
    stream_id       text        NOT NULL,
    stream_version  bigint      NOT NULL CHECK (stream_version > 0),
    type            text        NOT NULL,
    schema_version  int         NOT NULL,
    occurred_at     timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    account_id      text        NOT NULL DEFAULT '',
    data            jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, stream_version)
);

CREATE UNIQUE INDEX events_global_order ON events (transaction_id, position);
CREATE UNIQUE INDEX events_position ON events (position);
CREATE INDEX events_apikey_hash ON events ((data ->> 'key_hash')) WHERE type = 'apikey.issued';

-- Facts are never changed once stored.
CREATE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only: % refused', TG_OP;
END $$;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_append_only();

-- Where each follower of the global order (the outbox relay) has got to.
CREATE TABLE checkpoints (
    name            text        PRIMARY KEY,
    transaction_id  xid8        NOT NULL,
    position        bigint      NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
