package account

import (
	"fmt"

	"github.com/tollgate/tollgate/domainerr"
	"github.com/tollgate/tollgate/events"
)

// ChangePlan moves an account to another plan.
type ChangePlan struct {
	Plan string
}

// DecideChangePlan decides on ChangePlan. Moving to the plan the account
// is on is a no-op, so a retried request succeeds.
func DecideChangePlan(a Account, c ChangePlan, planExists func(string) bool) ([]events.Data, error) {
	if !a.Exists() {
		return nil, fmt.Errorf("account: %w", domainerr.ErrNotFound)
	}
	if !planExists(c.Plan) {
		return nil, domainerr.Invalid("plan", "%q is not a configured plan", c.Plan)
	}
	if c.Plan == a.Plan {
		return nil, nil
	}
	return []events.Data{events.AccountPlanChanged{AccountID: a.ID, FromPlan: a.Plan, Plan: c.Plan}}, nil
}

// DecideChangeAccountLimits decides on setting an account's overrides
// (the whole set). Setting the overrides it has is a no-op.
func DecideChangeAccountLimits(a Account, l events.LimitOverrides) ([]events.Data, error) {
	if !a.Exists() {
		return nil, fmt.Errorf("account: %w", domainerr.ErrNotFound)
	}
	if err := validateLimits(l); err != nil {
		return nil, err
	}
	if sameLimits(a.Limits, l) {
		return nil, nil
	}
	return []events.Data{events.AccountLimitsChanged{AccountID: a.ID, Limits: l}}, nil
}

// DecideChangeAPIKeyLimits decides on setting a key's own limits (the
// whole set). A revoked key cannot be changed.
func DecideChangeAPIKeyLimits(k APIKey, l events.LimitOverrides) ([]events.Data, error) {
	if !k.Exists() {
		return nil, fmt.Errorf("key: %w", domainerr.ErrNotFound)
	}
	if k.Revoked {
		return nil, fmt.Errorf("key %s: %w", k.ID, domainerr.ErrRevoked)
	}
	if err := validateLimits(l); err != nil {
		return nil, err
	}
	if sameLimits(k.Limits, l) {
		return nil, nil
	}
	return []events.Data{events.APIKeyLimitsChanged{KeyID: k.ID, AccountID: k.AccountID, Limits: l}}, nil
}

// DecideSuspendAPIKey decides on an operator suspending a key. Suspending a
// suspended key is a no-op.
func DecideSuspendAPIKey(k APIKey) ([]events.Data, error) {
	if !k.Exists() {
		return nil, fmt.Errorf("key: %w", domainerr.ErrNotFound)
	}
	if k.Revoked {
		return nil, fmt.Errorf("key %s: %w", k.ID, domainerr.ErrRevoked)
	}
	if k.Suspended != nil {
		return nil, nil
	}
	return []events.Data{events.APIKeySuspended{KeyID: k.ID, AccountID: k.AccountID, Reason: events.SuspendOperator}}, nil
}

// DecideUnsuspendAPIKey decides on an operator lifting a suspension.
// Lifting a suspension that is not there is a no-op.
func DecideUnsuspendAPIKey(k APIKey) ([]events.Data, error) {
	if !k.Exists() {
		return nil, fmt.Errorf("key: %w", domainerr.ErrNotFound)
	}
	if k.Revoked {
		return nil, fmt.Errorf("key %s: %w", k.ID, domainerr.ErrRevoked)
	}
	if k.Suspended == nil {
		return nil, nil
	}
	return []events.Data{events.APIKeyUnsuspended{KeyID: k.ID, AccountID: k.AccountID}}, nil
}

// RunawayGuard is what the guard saw of a key's spend after a settlement.
type RunawayGuard struct {
	// Spent is the key's spend within Window, in nano-USD.
	Spent int64
	// Ceiling is the plan's ceiling for Window, in nano-USD.
	Ceiling int64
	// WindowSeconds is the guard's look-back.
	WindowSeconds int64
}

// DecideRunawayGuard suspends a key whose spend within the window passed
// the ceiling, with the figures, unless it is suspended or revoked already
// (the guard then has nothing to add).
func DecideRunawayGuard(k APIKey, g RunawayGuard) ([]events.Data, error) {
	if !k.Exists() {
		return nil, fmt.Errorf("key: %w", domainerr.ErrNotFound)
	}
	if g.Ceiling <= 0 || g.WindowSeconds <= 0 {
		return nil, domainerr.Invalid("ceiling", "the guard needs a positive ceiling and window")
	}
	if k.Revoked || k.Suspended != nil || g.Spent <= g.Ceiling {
		return nil, nil
	}
	return []events.Data{events.APIKeySuspended{
		KeyID: k.ID, AccountID: k.AccountID, Reason: events.SuspendRunaway,
		SpentNanoUSD: g.Spent, CeilingNanoUSD: g.Ceiling, WindowSeconds: g.WindowSeconds,
	}}, nil
}

func validateLimits(l events.LimitOverrides) error {
	for name, v := range map[string]*int64{
		"requests_per_minute": l.RequestsPerMinute, "tokens_per_minute": l.TokensPerMinute,
		"daily_budget": l.DailyBudgetNanoUSD, "monthly_budget": l.MonthlyBudgetNanoUSD,
	} {
		if v != nil && *v < 0 {
			return domainerr.Invalid(name, "must not be negative, got %d", *v)
		}
	}
	return nil
}

func sameLimits(a, b events.LimitOverrides) bool {
	eq := func(x, y *int64) bool { return (x == nil && y == nil) || (x != nil && y != nil && *x == *y) }
	return eq(a.RequestsPerMinute, b.RequestsPerMinute) && eq(a.TokensPerMinute, b.TokensPerMinute) &&
		eq(a.DailyBudgetNanoUSD, b.DailyBudgetNanoUSD) && eq(a.MonthlyBudgetNanoUSD, b.MonthlyBudgetNanoUSD)
}
