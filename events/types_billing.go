package events

// billingTypes are the event types of the billing lifecycle with Stripe: checkout, subscriptions, payments, downgrades.
var billingTypes = map[string]typeInfo{}
