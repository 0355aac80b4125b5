package account

import (
	"time"

	"github.com/tollgate/tollgate/events"
)

// BillingState is an account's subscription and dunning state, folded from
// the billing events of its stream.
type BillingState struct {
	SubscriptionID     string
	SubscriptionStatus string
	// SubscriptionAt is the Stripe creation time of the last applied
	// subscription event; an older one arriving later is stale.
	SubscriptionAt time.Time
	// PaymentAt is the Stripe creation time of the last applied invoice
	// payment event; an older one arriving later is stale.
	PaymentAt time.Time
	// GraceUntil is set while a failed payment is unresolved: the account
	// keeps its plan until then and is downgraded after.
	GraceUntil time.Time
	// DowngradedTo is the fallback plan while the account is downgraded.
	DowngradedTo string
}

// EffectivePlan is the plan whose limits and models apply now: the
// fallback plan while the account is downgraded, its plan otherwise.
func (a Account) EffectivePlan() string {
	if a.Billing.DowngradedTo != "" {
		return a.Billing.DowngradedTo
	}
	return a.Plan
}

// applyBilling folds one billing event into the account.
func (a *Account) applyBilling(d events.Data) {
	b := &a.Billing
	switch d := d.(type) {
	case events.BillingSubscriptionChanged:
		b.SubscriptionID, b.SubscriptionStatus, b.SubscriptionAt = d.SubscriptionID, d.Status, d.StripeCreated
		a.Plan = d.Plan
	case events.BillingPaymentFailed:
		b.PaymentAt = d.StripeCreated
		if b.GraceUntil.IsZero() {
			b.GraceUntil = d.GraceUntil
		}
	case events.BillingPaymentSucceeded:
		b.PaymentAt, b.GraceUntil, b.DowngradedTo = d.StripeCreated, time.Time{}, ""
	case events.AccountDowngraded:
		b.DowngradedTo = d.ToPlan
	}
}
