-- Quota read models, built from events by projections/quota.go. After a
-- restart or a Redis flush the limiter is seeded from them, so no window
-- or budget resets by accident.

-- Spent and reserved money per scope (account or key) and budget period
-- ('day:YYYY-MM-DD', 'month:YYYY-MM').
CREATE TABLE quota_state (
    scope       text   NOT NULL, -- 'account' or 'key'
    id          text   NOT NULL,
    account_id  text   NOT NULL,
    period      text   NOT NULL,
    spent       bigint NOT NULL DEFAULT 0,
    reserved    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, id, period)
);
CREATE INDEX quota_state_account ON quota_state (account_id);

-- Reservations whose completion has not finished.
CREATE TABLE quota_reservations (
    completion_id  text        PRIMARY KEY,
    account_id     text        NOT NULL,
    key_id         text        NOT NULL,
    cost           bigint      NOT NULL,
    tokens         bigint      NOT NULL,
    day            text        NOT NULL,
    month          text        NOT NULL,
    reserved_at    timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL
);
CREATE INDEX quota_reservations_account ON quota_reservations (account_id);

-- Admitted requests and tokens per scope and second, for the rate windows.
CREATE TABLE quota_windows (
    scope       text   NOT NULL,
    id          text   NOT NULL,
    account_id  text   NOT NULL,
    second      bigint NOT NULL,
    requests    bigint NOT NULL,
    tokens      bigint NOT NULL,
    PRIMARY KEY (scope, id, second)
);
CREATE INDEX quota_windows_account ON quota_windows (account_id, second);

-- Plan, overrides and suspension per account and key.
CREATE TABLE quota_limits (
    scope       text        NOT NULL,
    id          text        NOT NULL,
    account_id  text        NOT NULL,
    plan        text        NOT NULL DEFAULT '',
    limits      jsonb       NOT NULL DEFAULT '{}',
    suspension  jsonb,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (scope, id)
);
CREATE INDEX quota_limits_account ON quota_limits (account_id);
