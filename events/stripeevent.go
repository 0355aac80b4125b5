package events

import (
	"time"
)

// Events of Stripe webhooks: the receipt of a verified Stripe event, on the account's stream when it concerns one, else on its own stripeevent-… stream.

// Event type names of this stream. They are past-tense facts and never change once used.
const (
	TypeBillingWebhookReceived = "billing.webhook_received"
)

// stripeeventTypes registers this stream's event types and their schema versions.
var stripeeventTypes = map[string]typeInfo{
	TypeBillingWebhookReceived: {version: 1, decode: decoder[BillingWebhookReceived]()},
}

// StreamStripeEvent prefixes the stream of a verified Stripe event that
// concerns no account (an unhandled type, an unknown customer).
const StreamStripeEvent = "stripeevent-"

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
