-- The Stripe customer of each account, as billing.customer_linked says:
-- the billing reporter only looks at records of accounts it can report to,
-- so the records of accounts without a customer (a free tier's) never
-- crowd out the ones that can be reported.
CREATE TABLE billing_customers (
    account_id          text PRIMARY KEY,
    stripe_customer_id  text NOT NULL
);
