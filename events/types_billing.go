package events

import "time"

// Billing lifecycle event type names.
const (
	TypeBillingWebhookReceived     = "billing.webhook_received"
	TypeBillingSubscriptionChanged = "billing.subscription_changed"
	TypeBillingPaymentFailed       = "billing.payment_failed"
	TypeBillingPaymentSucceeded    = "billing.payment_succeeded"
	TypeAccountDowngraded          = "account.downgraded"
	TypeBillingRecordFlagged       = "billing.record_flagged"
)

// StreamStripeEvent prefixes the stream of a verified Stripe event that
// concerns no account (an unhandled type, an unknown customer).
const StreamStripeEvent = "stripeevent-"

// billingTypes are the event types of the billing lifecycle with Stripe: checkout, subscriptions, payments, downgrades.
var billingTypes = map[string]typeInfo{
	TypeBillingWebhookReceived:     {version: 1, decode: decoder[BillingWebhookReceived]()},
	TypeBillingSubscriptionChanged: {version: 1, decode: decoder[BillingSubscriptionChanged]()},
	TypeBillingPaymentFailed:       {version: 1, decode: decoder[BillingPaymentFailed]()},
	TypeBillingPaymentSucceeded:    {version: 1, decode: decoder[BillingPaymentSucceeded]()},
	TypeAccountDowngraded:          {version: 1, decode: decoder[AccountDowngraded]()},
	TypeBillingRecordFlagged:       {version: 1, decode: decoder[BillingRecordFlagged]()},
}

// Outcomes of a Stripe webhook, as recorded in BillingWebhookReceived.
const (
	// WebhookApplied: the event changed the account's billing state.
	WebhookApplied = "applied"
	// WebhookStale: an event older than one already applied arrived late;
	// it is recorded and changes nothing, so state never rolls back.
	WebhookStale = "stale"
	// WebhookUnhandled: Tollgate does not act on this event type.
	WebhookUnhandled = "unhandled"
	// WebhookNoAccount: no account is linked to the event's customer.
	WebhookNoAccount = "no_account"
	// WebhookIgnored: the event concerns something the account no longer
	// follows (another subscription, another customer, an unknown price).
	WebhookIgnored = "ignored"
)

// BillingWebhookReceived: a Stripe webhook event passed signature
// verification. Its event id derives from the Stripe event id, so a
// redelivery appends nothing. Every verified event is recorded, also those
// Tollgate does not act on.
type BillingWebhookReceived struct {
	StripeEventID   string    `json:"stripe_event_id"`
	StripeEventType string    `json:"stripe_event_type"`
	StripeCreated   time.Time `json:"stripe_created"`
	// APIVersion is the version Stripe rendered the event with.
	APIVersion       string `json:"api_version"`
	Livemode         bool   `json:"livemode"`
	AccountID        string `json:"account_id,omitempty"`
	StripeCustomerID string `json:"stripe_customer_id,omitempty"`
	// Outcome is one of the Webhook* constants.
	Outcome string `json:"outcome"`
}

// EventType implements Data.
func (BillingWebhookReceived) EventType() string { return TypeBillingWebhookReceived }

// BillingSubscriptionChanged: Stripe reported the account's subscription
// in a new state. Plan is the plan whose limits apply from now on (the
// fallback plan once the subscription ended).
type BillingSubscriptionChanged struct {
	AccountID        string `json:"account_id"`
	StripeCustomerID string `json:"stripe_customer_id"`
	SubscriptionID   string `json:"subscription_id"`
	// Status is Stripe's subscription status (active, trialing, past_due,
	// canceled, unpaid, incomplete, incomplete_expired, paused).
	Status string `json:"status"`
	Plan   string `json:"plan"`
	// StripeEventID and StripeCreated order the changes: one created
	// earlier than the last applied is stale.
	StripeEventID string    `json:"stripe_event_id"`
	StripeCreated time.Time `json:"stripe_created"`
}

// EventType implements Data.
func (BillingSubscriptionChanged) EventType() string { return TypeBillingSubscriptionChanged }

// BillingPaymentFailed: an invoice payment failed. The account keeps its
// plan until GraceUntil (set by the first failure of a run and not moved
// by Stripe's retries), then it is downgraded unless a payment succeeds.
type BillingPaymentFailed struct {
	AccountID        string    `json:"account_id"`
	StripeCustomerID string    `json:"stripe_customer_id"`
	InvoiceID        string    `json:"invoice_id"`
	GraceUntil       time.Time `json:"grace_until"`
	StripeEventID    string    `json:"stripe_event_id"`
	StripeCreated    time.Time `json:"stripe_created"`
}

// EventType implements Data.
func (BillingPaymentFailed) EventType() string { return TypeBillingPaymentFailed }

// BillingPaymentSucceeded: an invoice was paid; a grace period or a
// downgrade ends and the subscribed plan applies again.
type BillingPaymentSucceeded struct {
	AccountID        string    `json:"account_id"`
	StripeCustomerID string    `json:"stripe_customer_id"`
	InvoiceID        string    `json:"invoice_id"`
	StripeEventID    string    `json:"stripe_event_id"`
	StripeCreated    time.Time `json:"stripe_created"`
}

// EventType implements Data.
func (BillingPaymentSucceeded) EventType() string { return TypeBillingPaymentSucceeded }

// AccountDowngraded: the grace period after a failed payment ended without
// a payment; the fallback plan's limits apply until a payment succeeds.
type AccountDowngraded struct {
	AccountID  string    `json:"account_id"`
	FromPlan   string    `json:"from_plan"`
	ToPlan     string    `json:"to_plan"`
	GraceUntil time.Time `json:"grace_until"`
}

// EventType implements Data.
func (AccountDowngraded) EventType() string { return TypeAccountDowngraded }

// Reasons a billing record is flagged.
const (
	// FlagTooOld: the record's window starts longer ago than Stripe accepts
	// meter events for (35 days).
	FlagTooOld = "too_old"
)

// BillingRecordFlagged: a billing record cannot be sent to Stripe (its
// window is older than Stripe accepts meter events for) and needs an
// operator. It freezes the record like billing.record_closed does and takes
// it out of the reporter's queue, so it blocks no other record; the
// reconciliation keeps showing its quantity as not reported.
type BillingRecordFlagged struct {
	RecordID    string    `json:"record_id"`
	AccountID   string    `json:"account_id"`
	WindowStart time.Time `json:"window_start"`
	Quantity    int64     `json:"quantity"`
	// Reason is one of the Flag* constants.
	Reason string `json:"reason"`
}

// EventType implements Data.
func (BillingRecordFlagged) EventType() string { return TypeBillingRecordFlagged }
