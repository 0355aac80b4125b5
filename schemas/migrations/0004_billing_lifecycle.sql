-- Billing lifecycle lookups on the event store: the account of a Stripe
-- customer (webhooks), and the facts reconciliation and dunning read.
CREATE INDEX events_billing_customer ON events ((data ->> 'stripe_customer_id'))
    WHERE type = 'billing.customer_linked';
CREATE INDEX events_billing_payment_failed ON events (stream_id, stream_version)
    WHERE type = 'billing.payment_failed';
CREATE INDEX events_billing_record_facts ON events (stream_id, type)
    WHERE type IN ('billing.record_closed', 'billing.usage_reported');
