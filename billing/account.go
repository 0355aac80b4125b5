package billing

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tollgate/tollgate/account"
	"github.com/tollgate/tollgate/domainerr"
	"github.com/tollgate/tollgate/events"
)

// ErrNoBillingCustomer: the account has no Stripe customer yet (it never
// went through checkout), so there is no billing portal to open.
var ErrNoBillingCustomer = errors.New("no billing customer")

// StripeEvent is the part of a verified Stripe webhook event the decisions
// need, whatever API version Stripe rendered it with.
type StripeEvent struct {
	ID         string
	Type       string
	Created    time.Time
	APIVersion string
	Livemode   bool
	// CustomerID is the object's customer.
	CustomerID string
	// SubscriptionID is the subscription (subscription events, and a
	// checkout session in subscription mode).
	SubscriptionID string
	// Status is the subscription's status.
	Status string
	// PriceIDs are the subscription items' prices.
	PriceIDs []string
	// Plan is the plan a checkout session was opened for (its metadata).
	Plan string
	// InvoiceID is the invoice of invoice events.
	InvoiceID string
}

// BillingPolicy is the configuration the billing decisions apply.
type BillingPolicy struct {
	// PlanForPrice maps a Stripe price id to the plan it sells.
	PlanForPrice func(priceID string) (string, bool)
	// PlanExists tells whether a plan is configured.
	PlanExists func(string) bool
	// FallbackPlan applies once a subscription ended or a grace period
	// ran out.
	FallbackPlan string
	// GracePeriod is how long an account keeps its plan after a failed
	// payment.
	GracePeriod time.Duration
}

// Stripe event types Tollgate acts on.
const (
	StripeCheckoutCompleted     = "checkout.session.completed"
	StripeSubscriptionCreated   = "customer.subscription.created"
	StripeSubscriptionUpdated   = "customer.subscription.updated"
	StripeSubscriptionDeleted   = "customer.subscription.deleted"
	StripeInvoicePaymentFailed  = "invoice.payment_failed"
	StripeInvoicePaid           = "invoice.paid"
	subscriptionStatusCancelled = "canceled"
)

// entitled lists the subscription statuses under which the subscribed
// plan applies; past_due is handled by the invoice events' grace period.
var entitled = []string{"active", "trialing", "past_due"}

// HandlesStripeEvent reports whether Tollgate acts on a Stripe event type.
func HandlesStripeEvent(typ string) bool {
	switch typ {
	case StripeCheckoutCompleted, StripeSubscriptionCreated, StripeSubscriptionUpdated, StripeSubscriptionDeleted,
		StripeInvoicePaymentFailed, StripeInvoicePaid:
		return true
	}
	return false
}

// DecideStripeEvent decides what a verified Stripe event does to an
// account. The first event returned is always the receipt
// (billing.webhook_received) with its outcome; the rest are the effects.
// An event older than the last one applied of its kind (subscription or
// payment) is stale: recorded, never applied, so a reordered delivery
// cannot roll state back.
func DecideStripeEvent(a account.Account, ev StripeEvent, p BillingPolicy) ([]events.Data, error) {
	if !a.Exists() {
		return nil, fmt.Errorf("account for stripe event %s: %w", ev.ID, domainerr.ErrNotFound)
	}
	receipt := events.BillingWebhookReceived{
		StripeEventID: ev.ID, StripeEventType: ev.Type, StripeCreated: ev.Created.UTC(), APIVersion: ev.APIVersion,
		Livemode: ev.Livemode, AccountID: a.ID, StripeCustomerID: ev.CustomerID, Outcome: events.WebhookApplied,
	}
	d := stripeDecision{a: a, ev: ev, p: p, cus: ev.CustomerID, created: ev.Created.UTC(), receipt: receipt}
	if ev.CustomerID != "" && !strings.HasPrefix(ev.CustomerID, "cus_") {
		return nil, domainerr.Invalid("customer", "%q is not a Stripe customer id", ev.CustomerID)
	}
	if a.StripeCustomerID != "" && ev.CustomerID != "" && ev.CustomerID != a.StripeCustomerID {
		return d.only(events.WebhookIgnored) // another customer's object
	}
	if a.StripeCustomerID == "" && ev.CustomerID != "" {
		d.link = []events.Data{events.BillingCustomerLinked{AccountID: a.ID, StripeCustomerID: ev.CustomerID}}
	}
	if d.cus == "" {
		d.cus = a.StripeCustomerID
	}
	switch ev.Type {
	case StripeCheckoutCompleted:
		return d.checkout()
	case StripeSubscriptionCreated, StripeSubscriptionUpdated, StripeSubscriptionDeleted:
		return d.subscription()
	case StripeInvoicePaymentFailed, StripeInvoicePaid:
		return d.invoice()
	default:
		return d.only(events.WebhookUnhandled, d.link...)
	}
}

// stripeDecision is one Stripe event being decided on an account: the
// receipt to record, the customer link to add (if any) and the customer
// the effects name.
type stripeDecision struct {
	a       account.Account
	ev      StripeEvent
	p       BillingPolicy
	cus     string
	created time.Time
	link    []events.Data
	receipt events.BillingWebhookReceived
}

// only returns the receipt with outcome, then more.
func (d stripeDecision) only(outcome string, more ...events.Data) ([]events.Data, error) {
	r := d.receipt
	r.Outcome = outcome
	return append([]events.Data{r}, more...), nil
}

// applied returns the receipt (applied), the link and the effect.
func (d stripeDecision) applied(effect events.Data) ([]events.Data, error) {
	return d.only(events.WebhookApplied, append(d.link, effect)...)
}

func (d stripeDecision) checkout() ([]events.Data, error) {
	a, ev := d.a, d.ev
	if ev.SubscriptionID == "" || !d.p.PlanExists(ev.Plan) || d.cus == "" {
		return d.only(events.WebhookIgnored, d.link...)
	}
	if d.created.Before(a.Billing.SubscriptionAt) {
		return d.only(events.WebhookStale, d.link...)
	}
	return d.applied(events.BillingSubscriptionChanged{
		AccountID: a.ID, StripeCustomerID: d.cus, SubscriptionID: ev.SubscriptionID, Status: "active",
		Plan: ev.Plan, StripeEventID: ev.ID, StripeCreated: d.created,
	})
}

func (d stripeDecision) subscription() ([]events.Data, error) {
	a, ev, p := d.a, d.ev, d.p
	if d.cus == "" || ev.SubscriptionID == "" {
		return d.only(events.WebhookIgnored, d.link...)
	}
	if d.created.Before(a.Billing.SubscriptionAt) {
		return d.only(events.WebhookStale, d.link...)
	}
	status := ev.Status
	if ev.Type == StripeSubscriptionDeleted {
		if a.Billing.SubscriptionID != "" && ev.SubscriptionID != a.Billing.SubscriptionID {
			return d.only(events.WebhookIgnored, d.link...) // an old subscription ended
		}
		status = subscriptionStatusCancelled
	}
	if status == "" {
		return nil, domainerr.Invalid("status", "subscription %s has no status", ev.SubscriptionID)
	}
	plan := p.FallbackPlan
	if slices.Contains(entitled, status) {
		plan = ""
		for _, price := range ev.PriceIDs {
			if name, ok := p.PlanForPrice(price); ok {
				plan = name
				break
			}
		}
		if plan == "" {
			return d.only(events.WebhookIgnored, d.link...) // no configured price: not ours to act on
		}
	}
	return d.applied(events.BillingSubscriptionChanged{
		AccountID: a.ID, StripeCustomerID: d.cus, SubscriptionID: ev.SubscriptionID, Status: status,
		Plan: plan, StripeEventID: ev.ID, StripeCreated: d.created,
	})
}

func (d stripeDecision) invoice() ([]events.Data, error) {
	a, ev := d.a, d.ev
	if d.cus == "" || ev.InvoiceID == "" {
		return d.only(events.WebhookIgnored, d.link...)
	}
	if d.created.Before(a.Billing.PaymentAt) {
		return d.only(events.WebhookStale, d.link...)
	}
	if ev.Type == StripeInvoicePaid {
		return d.applied(events.BillingPaymentSucceeded{
			AccountID: a.ID, StripeCustomerID: d.cus, InvoiceID: ev.InvoiceID, StripeEventID: ev.ID, StripeCreated: d.created,
		})
	}
	// The grace period runs from the first failure; Stripe's retries
	// of the same invoice do not extend it.
	grace := a.Billing.GraceUntil
	if grace.IsZero() {
		grace = d.created.Add(d.p.GracePeriod)
	}
	return d.applied(events.BillingPaymentFailed{
		AccountID: a.ID, StripeCustomerID: d.cus, InvoiceID: ev.InvoiceID, GraceUntil: grace,
		StripeEventID: ev.ID, StripeCreated: d.created,
	})
}

// DecideDowngrade decides whether an account whose payment failed is
// downgraded to the fallback plan at now: only once its grace period ended,
// once, and never after the payment was made. No events means nothing to do.
func DecideDowngrade(a account.Account, now time.Time, fallbackPlan string) ([]events.Data, error) {
	if !a.Exists() {
		return nil, fmt.Errorf("account: %w", domainerr.ErrNotFound)
	}
	b := a.Billing
	if b.GraceUntil.IsZero() || b.DowngradedTo != "" || now.Before(b.GraceUntil) {
		return nil, nil
	}
	if fallbackPlan == "" {
		return nil, domainerr.Invalid("fallback_plan", "is required")
	}
	return []events.Data{events.AccountDowngraded{AccountID: a.ID, FromPlan: a.Plan, ToPlan: fallbackPlan, GraceUntil: b.GraceUntil}}, nil
}

// DecideLinkCustomer decides on tying a Stripe customer to an account (at
// its first checkout). Linking the same customer again is a no-op; an
// account never changes customer, since its reported usage went there.
func DecideLinkCustomer(a account.Account, customerID string) ([]events.Data, error) {
	if !a.Exists() {
		return nil, fmt.Errorf("account: %w", domainerr.ErrNotFound)
	}
	if !strings.HasPrefix(customerID, "cus_") {
		return nil, domainerr.Invalid("stripe_customer_id", "must start with cus_")
	}
	switch a.StripeCustomerID {
	case customerID:
		return nil, nil
	case "":
		return []events.Data{events.BillingCustomerLinked{AccountID: a.ID, StripeCustomerID: customerID}}, nil
	default:
		return nil, fmt.Errorf("account %s is linked to %s: %w", a.ID, a.StripeCustomerID, domainerr.ErrWrongState)
	}
}

// StripeEventSeed is the id seed of the events a Stripe event causes: one
// of each type per Stripe event, so a redelivery derives the same ids.
func StripeEventSeed(stripeEventID, eventType string) string {
	return "stripe|" + stripeEventID + "|" + eventType
}

// StripeEventRecorded reports whether evs hold the receipt of a Stripe event.
func StripeEventRecorded(evs []events.Envelope, stripeEventID string) bool {
	id := events.DeriveID(StripeEventSeed(stripeEventID, events.TypeBillingWebhookReceived))
	return slices.ContainsFunc(evs, func(e events.Envelope) bool { return e.EventID == id })
}
