-- Billing read models that replace queries over the events' JSON (the
-- events table is the log, not a read model). Each is written by a
-- projector of billing/records, rebuilt like every read model.

-- The account each Stripe customer is linked to: the first link in the
-- global order wins, as the webhooks' lookup always had it.
CREATE TABLE billing_customer_links (
    stripe_customer_id  text PRIMARY KEY,
    account_id          text NOT NULL,
    position            bigint NOT NULL
);

-- Accounts whose payment failed and was neither paid nor downgraded since,
-- with the earliest grace end of those failures: the dunning loop's
-- candidates (billing.DecideDowngrade has the last word).
CREATE TABLE billing_dunning (
    account_id   text PRIMARY KEY,
    grace_until  timestamptz NOT NULL
);
CREATE INDEX billing_dunning_grace ON billing_dunning (grace_until);

-- What each billing record's stream says: the events reconciliation and
-- explanations name, and what was reported to Stripe.
CREATE TABLE billing_record_facts (
    record_id           text PRIMARY KEY,
    closed_event_id     uuid,
    flagged_event_id    uuid,
    reported_event_id   uuid,
    reported_quantity   bigint,
    stripe_customer_id  text,
    identifier          text
);

-- The event-JSON lookups these replace.
DROP INDEX IF EXISTS events_billing_customer;
DROP INDEX IF EXISTS events_billing_payment_failed;
DROP INDEX IF EXISTS events_billing_record_facts;
