package account

import (
	"fmt"
	"net/mail"
	"strings"

	"github.com/tollgate/tollgate/domainerr"
	"github.com/tollgate/tollgate/events"
)

// Account is an account's state, folded from its stream.
type Account struct {
	ID               string
	Name             string
	Email            string
	Plan             string
	StripeCustomerID string
	// Billing is the account's subscription and dunning state (see billing.go).
	Billing BillingState
	// Limits are the operator's overrides of the plan's limits.
	Limits events.LimitOverrides
	// Version is the stream version the state was folded at.
	Version int64
}

// Exists reports whether the account was created.
func (a Account) Exists() bool { return a.Version > 0 }

// AccountStream returns the stream id of an account.
func AccountStream(accountID string) string { return events.StreamAccount + accountID }

// FoldAccount rebuilds an account from its events.
func FoldAccount(evs []events.Envelope) (Account, error) {
	var a Account
	for _, e := range evs {
		d, err := events.Decode(e)
		if err != nil {
			return a, err
		}
		switch d := d.(type) {
		case events.AccountCreated:
			a.ID, a.Name, a.Email, a.Plan = d.AccountID, d.Name, d.Email, d.Plan
		case events.BillingCustomerLinked:
			a.StripeCustomerID = d.StripeCustomerID
		case events.BillingSubscriptionChanged, events.BillingPaymentFailed, events.BillingPaymentSucceeded, events.AccountDowngraded, events.BillingWebhookReceived:
			a.applyBilling(d)
		case events.AccountPlanChanged:
			a.Plan = d.Plan
		case events.AccountLimitsChanged:
			a.Limits = d.Limits
		}
		a.Version = e.StreamVersion
	}
	return a, nil
}

// CreateAccount opens an account.
type CreateAccount struct {
	AccountID string
	Name      string
	Email     string
	Plan      string
	// StripeCustomerID optionally links an existing Stripe customer.
	StripeCustomerID string
}

// DecideCreateAccount decides on CreateAccount. planExists tells whether a
// plan name is configured.
func DecideCreateAccount(a Account, c CreateAccount, planExists func(string) bool) ([]events.Data, error) {
	if a.Exists() {
		return nil, fmt.Errorf("account %s: %w", c.AccountID, domainerr.ErrAlreadyExists)
	}
	name := strings.TrimSpace(c.Name)
	switch {
	case name == "":
		return nil, domainerr.Invalid("name", "is required")
	case len(name) > 200:
		return nil, domainerr.Invalid("name", "is longer than 200 characters")
	}
	if c.Email != "" {
		if _, err := mail.ParseAddress(c.Email); err != nil {
			return nil, domainerr.Invalid("email", "is not an email address")
		}
	}
	if !planExists(c.Plan) {
		return nil, domainerr.Invalid("plan", "%q is not a configured plan", c.Plan)
	}
	out := []events.Data{events.AccountCreated{AccountID: c.AccountID, Name: name, Email: c.Email, Plan: c.Plan}}
	if c.StripeCustomerID != "" {
		if !strings.HasPrefix(c.StripeCustomerID, "cus_") {
			return nil, domainerr.Invalid("stripe_customer_id", "must start with cus_")
		}
		out = append(out, events.BillingCustomerLinked{AccountID: c.AccountID, StripeCustomerID: c.StripeCustomerID})
	}
	return out, nil
}

// AtVersion is the stream version the state was folded at.
func (a Account) AtVersion() int64 { return a.Version }

// Owner is the account the stream belongs to; "" before it exists.
func (a Account) Owner() string { return a.ID }
