package events

import (
	"time"
)

// Events of the account-… stream: an account's creation, plan, limits, Stripe customer, subscription, payments and downgrades.

// Event type names of this stream. They are past-tense facts and never change once used.
const (
	TypeAccountCreated             = "account.created"
	TypeBillingCustomerLinked      = "billing.customer_linked"
	TypeBillingSubscriptionChanged = "billing.subscription_changed"
	TypeBillingPaymentFailed       = "billing.payment_failed"
	TypeBillingPaymentSucceeded    = "billing.payment_succeeded"
	TypeAccountDowngraded          = "account.downgraded"
	TypeAccountPlanChanged         = "account.plan_changed"
	TypeAccountLimitsChanged       = "account.limits_changed"
)

// accountTypes registers this stream's event types and their schema versions.
var accountTypes = map[string]typeInfo{
	TypeAccountCreated:             {version: 1, decode: decoder[AccountCreated]()},
	TypeBillingCustomerLinked:      {version: 1, decode: decoder[BillingCustomerLinked]()},
	TypeBillingSubscriptionChanged: {version: 1, decode: decoder[BillingSubscriptionChanged]()},
	TypeBillingPaymentFailed:       {version: 1, decode: decoder[BillingPaymentFailed]()},
	TypeBillingPaymentSucceeded:    {version: 1, decode: decoder[BillingPaymentSucceeded]()},
	TypeAccountDowngraded:          {version: 1, decode: decoder[AccountDowngraded]()},
	TypeAccountPlanChanged:         {version: 1, decode: decoder[AccountPlanChanged]()},
	TypeAccountLimitsChanged:       {version: 1, decode: decoder[AccountLimitsChanged]()},
}

// AccountCreated: an operator opened an account.
type AccountCreated struct {
	AccountID string `json:"account_id"`
	Name      string `json:"name"`
	Email     string `json:"email"`
	Plan      string `json:"plan"`
}

// EventType implements Data.
func (AccountCreated) EventType() string { return TypeAccountCreated }

// BillingCustomerLinked: the account was tied to a Stripe customer, to whom
// its metered usage is reported from now on.
type BillingCustomerLinked struct {
	AccountID        string `json:"account_id"`
	StripeCustomerID string `json:"stripe_customer_id"`
}

// EventType implements Data.
func (BillingCustomerLinked) EventType() string { return TypeBillingCustomerLinked }

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

// LimitOverrides are limits set on an account or a key on top of its
// plan. A nil field takes the plan's value (for a key: the account's); a
// set field replaces it. Budgets are in nano-USD.
type LimitOverrides struct {
	RequestsPerMinute    *int64 `json:"requests_per_minute"`
	TokensPerMinute      *int64 `json:"tokens_per_minute"`
	DailyBudgetNanoUSD   *int64 `json:"daily_budget_nano_usd"`
	MonthlyBudgetNanoUSD *int64 `json:"monthly_budget_nano_usd"`
}

// AccountPlanChanged: an operator (or billing) moved the account to
// another plan; its limits follow from the next request on.
type AccountPlanChanged struct {
	AccountID string `json:"account_id"`
	FromPlan  string `json:"from_plan"`
	Plan      string `json:"plan"`
}

// EventType implements Data.
func (AccountPlanChanged) EventType() string { return TypeAccountPlanChanged }

// AccountLimitsChanged: an operator set the account's limit overrides.
// Limits is the whole new set, not a difference.
type AccountLimitsChanged struct {
	AccountID string         `json:"account_id"`
	Limits    LimitOverrides `json:"limits"`
}

// EventType implements Data.
func (AccountLimitsChanged) EventType() string { return TypeAccountLimitsChanged }
