package commands

import (
	"context"
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
	only := func(outcome string, more ...events.Data) ([]events.Data, error) {
		receipt.Outcome = outcome
		return append([]events.Data{receipt}, more...), nil
	}
	if ev.CustomerID != "" && !strings.HasPrefix(ev.CustomerID, "cus_") {
		return nil, domainerr.Invalid("customer", "%q is not a Stripe customer id", ev.CustomerID)
	}
	if a.StripeCustomerID != "" && ev.CustomerID != "" && ev.CustomerID != a.StripeCustomerID {
		return only(events.WebhookIgnored) // another customer's object
	}
	var link []events.Data
	if a.StripeCustomerID == "" && ev.CustomerID != "" {
		link = []events.Data{events.BillingCustomerLinked{AccountID: a.ID, StripeCustomerID: ev.CustomerID}}
	}
	cus := ev.CustomerID
	if cus == "" {
		cus = a.StripeCustomerID
	}
	created := ev.Created.UTC()
	switch ev.Type {
	case StripeCheckoutCompleted:
		if ev.SubscriptionID == "" || !p.PlanExists(ev.Plan) || cus == "" {
			return only(events.WebhookIgnored, link...)
		}
		if created.Before(a.Billing.SubscriptionAt) {
			return only(events.WebhookStale, link...)
		}
		return only(events.WebhookApplied, append(link, events.BillingSubscriptionChanged{
			AccountID: a.ID, StripeCustomerID: cus, SubscriptionID: ev.SubscriptionID, Status: "active",
			Plan: ev.Plan, StripeEventID: ev.ID, StripeCreated: created,
		})...)
	case StripeSubscriptionCreated, StripeSubscriptionUpdated, StripeSubscriptionDeleted:
		if cus == "" || ev.SubscriptionID == "" {
			return only(events.WebhookIgnored, link...)
		}
		if created.Before(a.Billing.SubscriptionAt) {
			return only(events.WebhookStale, link...)
		}
		status := ev.Status
		if ev.Type == StripeSubscriptionDeleted {
			if a.Billing.SubscriptionID != "" && ev.SubscriptionID != a.Billing.SubscriptionID {
				return only(events.WebhookIgnored, link...) // an old subscription ended
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
				return only(events.WebhookIgnored, link...) // no configured price: not ours to act on
			}
		}
		return only(events.WebhookApplied, append(link, events.BillingSubscriptionChanged{
			AccountID: a.ID, StripeCustomerID: cus, SubscriptionID: ev.SubscriptionID, Status: status,
			Plan: plan, StripeEventID: ev.ID, StripeCreated: created,
		})...)
	case StripeInvoicePaymentFailed, StripeInvoicePaid:
		if cus == "" || ev.InvoiceID == "" {
			return only(events.WebhookIgnored, link...)
		}
		if created.Before(a.Billing.PaymentAt) {
			return only(events.WebhookStale, link...)
		}
		if ev.Type == StripeInvoicePaid {
			return only(events.WebhookApplied, append(link, events.BillingPaymentSucceeded{
				AccountID: a.ID, StripeCustomerID: cus, InvoiceID: ev.InvoiceID, StripeEventID: ev.ID, StripeCreated: created,
			})...)
		}
		// The grace period runs from the first failure; Stripe's retries
		// of the same invoice do not extend it.
		grace := a.Billing.GraceUntil
		if grace.IsZero() {
			grace = created.Add(p.GracePeriod)
		}
		return only(events.WebhookApplied, append(link, events.BillingPaymentFailed{
			AccountID: a.ID, StripeCustomerID: cus, InvoiceID: ev.InvoiceID, GraceUntil: grace,
			StripeEventID: ev.ID, StripeCreated: created,
		})...)
	default:
		return only(events.WebhookUnhandled, link...)
	}
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

// stripeEventSeed is the id seed of the events a Stripe event causes: one
// of each type per Stripe event, so a redelivery derives the same ids.
func stripeEventSeed(stripeEventID, eventType string) string {
	return "stripe|" + stripeEventID + "|" + eventType
}

// StripeEventRecorded reports whether evs hold the receipt of a Stripe event.
func StripeEventRecorded(evs []events.Envelope, stripeEventID string) bool {
	id := events.DeriveID(stripeEventSeed(stripeEventID, events.TypeBillingWebhookReceived))
	return slices.ContainsFunc(evs, func(e events.Envelope) bool { return e.EventID == id })
}

// maxBillingAttempts bounds the reloads after a concurrent append to an
// account stream.
const maxBillingAttempts = 5

// LinkCustomer ties a Stripe customer to an account.
func (s *Service) LinkCustomer(ctx context.Context, md events.Metadata, accountID, customerID string) (account.Account, error) {
	return s.decideAccount(ctx, md, accountID, "|"+customerID, func(a account.Account) ([]events.Data, error) {
		return DecideLinkCustomer(a, customerID)
	})
}

// Downgrade downgrades an account whose grace period ended at now; it
// appends nothing when there is nothing to do.
func (s *Service) Downgrade(ctx context.Context, md events.Metadata, accountID string, now time.Time, fallbackPlan string) (account.Account, error) {
	return s.decideAccount(ctx, md, accountID, "|"+fmt.Sprint(now.Unix()), func(a account.Account) ([]events.Data, error) {
		return DecideDowngrade(a, now, fallbackPlan)
	})
}

// decideAccount loads an account, decides and appends, reloading after a
// concurrent append.
func (s *Service) decideAccount(ctx context.Context, md events.Metadata, accountID, suffix string, decide func(account.Account) ([]events.Data, error)) (account.Account, error) {
	md.AccountID = accountID
	a, _, err := update(ctx, s, account.AccountStream(accountID), md, account.FoldAccount, func(account.Account) string { return suffix }, maxBillingAttempts, decide)
	return a, err
}

// ApplyStripeEvent records a verified Stripe event on its account's stream
// and applies it, in one append whose event ids derive from the Stripe
// event id: a redelivery finds the receipt and changes nothing. It returns
// the outcome recorded and whether the event had been recorded before.
func (s *Service) ApplyStripeEvent(ctx context.Context, md events.Metadata, accountID string, ev StripeEvent, p BillingPolicy) (outcome string, duplicate bool, err error) {
	stream := account.AccountStream(accountID)
	for attempt := 0; ; attempt++ {
		evs, err := s.store.Load(ctx, stream)
		if err != nil {
			return "", false, err
		}
		if StripeEventRecorded(evs, ev.ID) {
			return "", true, nil
		}
		a, err := account.FoldAccount(evs)
		if err != nil {
			return "", false, err
		}
		data, err := DecideStripeEvent(a, ev, p)
		if err != nil {
			return "", false, err
		}
		md.AccountID = accountID
		envs := make([]events.Envelope, len(data))
		for i, d := range data {
			if envs[i], err = events.New(stream, d, md, s.now(), stripeEventSeed(ev.ID, d.EventType())); err != nil {
				return "", false, err
			}
		}
		_, err = s.store.Append(ctx, stream, a.Version, envs...)
		if errors.Is(err, events.ErrConflict) && attempt < maxBillingAttempts {
			continue // a concurrent append, maybe this very event redelivered: reload
		}
		if err != nil {
			return "", false, err
		}
		return data[0].(events.BillingWebhookReceived).Outcome, false, nil
	}
}

// RecordStripeEvent records a verified Stripe event that concerns no
// account on its own stream; a redelivery appends nothing.
func (s *Service) RecordStripeEvent(ctx context.Context, md events.Metadata, ev StripeEvent, outcome string) error {
	d := events.BillingWebhookReceived{
		StripeEventID: ev.ID, StripeEventType: ev.Type, StripeCreated: ev.Created.UTC(), APIVersion: ev.APIVersion,
		Livemode: ev.Livemode, StripeCustomerID: ev.CustomerID, Outcome: outcome,
	}
	stream := events.StreamStripeEvent + ev.ID
	e, err := events.New(stream, d, md, s.now(), stripeEventSeed(ev.ID, d.EventType()))
	if err != nil {
		return err
	}
	_, err = s.store.Append(ctx, stream, 0, e)
	if errors.Is(err, events.ErrConflict) {
		return nil // recorded before (with the outcome known then)
	}
	return err
}
