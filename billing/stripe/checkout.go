package stripe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	stripe "github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"

	"github.com/tollgate/tollgate/account"
	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/commands"
	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/domainerr"
	"github.com/tollgate/tollgate/events"
)

// ErrStripeUnavailable: a call to Stripe failed; the client may retry.
var ErrStripeUnavailable = errors.New("stripe call failed")

// ErrBillingNotConfigured: the operator has not configured what the
// endpoint needs (Stripe key, webhook secret, return URLs).
var ErrBillingNotConfigured = errors.New("billing is not configured")

// ErrAlreadySubscribed: the account has a live subscription; plan changes
// go through the billing portal, so a second subscription is never sold.
var ErrAlreadySubscribed = errors.New("already subscribed")

// Checkout opens Stripe Checkout and Billing Portal sessions for accounts.
type Checkout struct {
	svc    *commands.Service
	stripe *client.API
	cfg    *config.Config
	log    *slog.Logger
}

// NewCheckout returns a Checkout; stripe may be nil when no Stripe key is
// configured, and then every call fails with ErrBillingNotConfigured.
func NewCheckout(svc *commands.Service, stripeClient *client.API, cfg *config.Config, logger *slog.Logger) *Checkout {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Checkout{svc: svc, stripe: stripeClient, cfg: cfg, log: logger.With("component", "billing-checkout")}
}

// Session is an opened Checkout or Portal session.
type Session struct {
	ID         string `json:"id"`
	URL        string `json:"url"`
	CustomerID string `json:"customer"`
}

// liveStatuses are the subscription statuses that still sell the plan.
var liveStatuses = []string{"active", "trialing", "past_due", "incomplete"}

// Checkout opens a Checkout Session in subscription mode for the plan's
// prices (the flat one and the metered one). The account's Stripe customer
// is created at its first checkout (under an idempotency key derived from
// the account, so a retry reuses it) and linked by billing.customer_linked;
// later checkouts reuse it.
func (c *Checkout) Checkout(ctx context.Context, md events.Metadata, accountID, planName string) (Session, error) {
	b := c.cfg.Billing
	if c.stripe == nil || b.CheckoutSuccessURL == "" || b.CheckoutCancelURL == "" {
		return Session{}, fmt.Errorf("checkout needs STRIPE_SECRET_KEY, billing.checkout_success_url and billing.checkout_cancel_url: %w", ErrBillingNotConfigured)
	}
	plan, ok := c.cfg.Plan(planName)
	if !ok {
		return Session{}, &domainerr.ValidationError{Field: "plan", Message: fmt.Sprintf("%q is not a plan", planName)}
	}
	if plan.StripePrice == "" {
		return Session{}, &domainerr.ValidationError{Field: "plan", Message: fmt.Sprintf("plan %q has no Stripe price and cannot be bought", planName)}
	}
	a, err := c.svc.Account(ctx, accountID)
	if err != nil {
		return Session{}, err
	}
	if slices.Contains(liveStatuses, a.Billing.SubscriptionStatus) {
		return Session{}, fmt.Errorf("account %s has subscription %s (%s): %w", a.ID, a.Billing.SubscriptionID, a.Billing.SubscriptionStatus, ErrAlreadySubscribed)
	}
	cus, err := c.customer(ctx, md, a)
	if err != nil {
		return Session{}, err
	}
	items := []*stripe.CheckoutSessionLineItemParams{{Price: stripe.String(plan.StripePrice), Quantity: stripe.Int64(1)}}
	if plan.StripeMeteredPrice != "" {
		// Metered prices take no quantity: usage comes from meter events.
		items = append(items, &stripe.CheckoutSessionLineItemParams{Price: stripe.String(plan.StripeMeteredPrice)})
	}
	meta := map[string]string{"account_id": a.ID, "plan": plan.Name}
	params := &stripe.CheckoutSessionParams{
		Mode:              stripe.String(string(stripe.CheckoutSessionModeSubscription)),
		Customer:          stripe.String(cus),
		ClientReferenceID: stripe.String(a.ID),
		LineItems:         items,
		SuccessURL:        stripe.String(b.CheckoutSuccessURL),
		CancelURL:         stripe.String(b.CheckoutCancelURL),
		SubscriptionData:  &stripe.CheckoutSessionSubscriptionDataParams{Metadata: meta},
	}
	params.Metadata = meta
	params.Context = ctx
	s, err := c.stripe.CheckoutSessions.New(params)
	if err != nil {
		return Session{}, fmt.Errorf("create checkout session: %w: %w", ErrStripeUnavailable, err)
	}
	c.log.InfoContext(ctx, "checkout session opened", "account_id", a.ID, "plan", plan.Name, "session_id", s.ID)
	return Session{ID: s.ID, URL: s.URL, CustomerID: cus}, nil
}

// customer returns the account's Stripe customer, creating and linking it
// the first time.
func (c *Checkout) customer(ctx context.Context, md events.Metadata, a account.Account) (string, error) {
	if a.StripeCustomerID != "" {
		return a.StripeCustomerID, nil
	}
	params := &stripe.CustomerParams{Name: stripe.String(a.Name)}
	if a.Email != "" {
		params.Email = stripe.String(a.Email)
	}
	params.AddMetadata("account_id", a.ID)
	params.SetIdempotencyKey("tollgate-customer-" + a.ID)
	params.Context = ctx
	cus, err := c.stripe.Customers.New(params)
	if err != nil {
		return "", fmt.Errorf("create customer: %w: %w", ErrStripeUnavailable, err)
	}
	linked, err := c.svc.LinkCustomer(ctx, md, a.ID, cus.ID)
	if err != nil {
		return "", fmt.Errorf("link customer %s: %w", cus.ID, err)
	}
	return linked.StripeCustomerID, nil
}

// Portal opens a Billing Portal session for the account's customer.
func (c *Checkout) Portal(ctx context.Context, accountID string) (Session, error) {
	if c.stripe == nil || c.cfg.Billing.PortalReturnURL == "" {
		return Session{}, fmt.Errorf("the portal needs STRIPE_SECRET_KEY and billing.portal_return_url: %w", ErrBillingNotConfigured)
	}
	a, err := c.svc.Account(ctx, accountID)
	if err != nil {
		return Session{}, err
	}
	if a.StripeCustomerID == "" {
		return Session{}, fmt.Errorf("account %s: %w", a.ID, billing.ErrNoBillingCustomer)
	}
	params := &stripe.BillingPortalSessionParams{
		Customer:  stripe.String(a.StripeCustomerID),
		ReturnURL: stripe.String(c.cfg.Billing.PortalReturnURL),
	}
	params.Context = ctx
	s, err := c.stripe.BillingPortalSessions.New(params)
	if err != nil {
		return Session{}, fmt.Errorf("create portal session: %w: %w", ErrStripeUnavailable, err)
	}
	return Session{ID: s.ID, URL: s.URL, CustomerID: a.StripeCustomerID}, nil
}
