-- Read models built by the projectors from the event log. They can all be
-- dropped and rebuilt from position 0.

-- Idempotency guard and per-stream checkpoint: the last stream version a
-- projection applied. Updated in the same transaction as the read model.
CREATE TABLE projection_streams (
    projection  text   NOT NULL,
    stream_id   text   NOT NULL,
    version     bigint NOT NULL,
    PRIMARY KEY (projection, stream_id)
);

-- One row per successful completion.
CREATE TABLE usage_ledger (
    completion_id      text        PRIMARY KEY,
    account_id         text        NOT NULL,
    key_id             text        NOT NULL,
    model              text        NOT NULL,
    provider           text        NOT NULL,
    upstream_model     text        NOT NULL,
    prompt_tokens      bigint      NOT NULL,
    completion_tokens  bigint      NOT NULL,
    tokens_estimated   boolean     NOT NULL,
    cost_nano_usd      bigint      NOT NULL,
    occurred_at        timestamptz NOT NULL,
    event_id           uuid        NOT NULL
);
CREATE INDEX usage_ledger_account_time ON usage_ledger (account_id, occurred_at);

-- Daily rollups of the ledger by account, key and model.
CREATE TABLE usage_rollups (
    account_id         text   NOT NULL,
    day                date   NOT NULL,
    key_id             text   NOT NULL,
    model              text   NOT NULL,
    requests           bigint NOT NULL,
    prompt_tokens      bigint NOT NULL,
    completion_tokens  bigint NOT NULL,
    cost_nano_usd      bigint NOT NULL,
    PRIMARY KEY (account_id, day, key_id, model)
);

-- The status of every completion request.
CREATE TABLE jobs (
    completion_id  text        PRIMARY KEY,
    account_id     text        NOT NULL,
    key_id         text        NOT NULL,
    model          text        NOT NULL,
    mode           text        NOT NULL,
    status         text        NOT NULL,
    requested_at   timestamptz NOT NULL,
    started_at     timestamptz,
    finished_at    timestamptz,
    error_type     text,
    error_message  text
);
CREATE INDEX jobs_account ON jobs (account_id, requested_at);

-- Billable quantity per account and window. A window can have several
-- records (seq 0, 1, …): usage that arrives after a record was closed for
-- reporting goes to a new one, never into a reported record.
CREATE TABLE billing_records (
    record_id        text        PRIMARY KEY,
    account_id       text        NOT NULL,
    window_start     timestamptz NOT NULL,
    window_end       timestamptz NOT NULL,
    seq              int         NOT NULL,
    unit             text        NOT NULL,
    quantity         bigint      NOT NULL,
    status           text        NOT NULL, -- open, closed, reported
    reported_at      timestamptz,
    UNIQUE (account_id, window_start, seq)
);
CREATE INDEX billing_records_status ON billing_records (status, window_end);

-- Which completion went into which billing record, for explanations.
CREATE TABLE billing_record_items (
    completion_id  text   PRIMARY KEY,
    record_id      text   NOT NULL,
    quantity       bigint NOT NULL
);
CREATE INDEX billing_record_items_record ON billing_record_items (record_id);
