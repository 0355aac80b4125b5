package commands

import (
	"fmt"

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
		return nil, fmt.Errorf("account: %w", ErrNotFound)
	}
	if !planExists(c.Plan) {
		return nil, invalid("plan", "%q is not a configured plan", c.Plan)
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
		return nil, fmt.Errorf("account: %w", ErrNotFound)
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
		return nil, fmt.Errorf("key: %w", ErrNotFound)
	}
	if k.Revoked {
		return nil, fmt.Errorf("key %s: %w", k.ID, ErrRevoked)
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
		return nil, fmt.Errorf("key: %w", ErrNotFound)
	}
	if k.Revoked {
		return nil, fmt.Errorf("key %s: %w", k.ID, ErrRevoked)
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
		return nil, fmt.Errorf("key: %w", ErrNotFound)
	}
	if k.Revoked {
		return nil, fmt.Errorf("key %s: %w", k.ID, ErrRevoked)
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
		return nil, fmt.Errorf("key: %w", ErrNotFound)
	}
	if g.Ceiling <= 0 || g.WindowSeconds <= 0 {
		return nil, invalid("ceiling", "the guard needs a positive ceiling and window")
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
			return invalid(name, "must not be negative, got %d", *v)
		}
	}
	return nil
}

func sameLimits(a, b events.LimitOverrides) bool {
	eq := func(x, y *int64) bool { return (x == nil && y == nil) || (x != nil && y != nil && *x == *y) }
	return eq(a.RequestsPerMinute, b.RequestsPerMinute) && eq(a.TokensPerMinute, b.TokensPerMinute) &&
		eq(a.DailyBudgetNanoUSD, b.DailyBudgetNanoUSD) && eq(a.MonthlyBudgetNanoUSD, b.MonthlyBudgetNanoUSD)
}

// decideReservation checks the reservation admission made for a request.
func decideReservation(cmd RequestCompletion, r events.QuotaReserved) (events.Data, error) {
	if r.CostNanoUSD < 0 || r.Tokens < 0 {
		return nil, invalid("reservation", "cost and tokens cannot be negative")
	}
	if r.Day == "" || r.Month == "" {
		return nil, invalid("reservation", "day and month are required")
	}
	r.CompletionID, r.AccountID, r.KeyID = cmd.CompletionID, cmd.AccountID, cmd.KeyID
	r.ExpiresAt = r.ExpiresAt.UTC()
	return r, nil
}

// settlement is the quota event that goes with a completion's outcome:
// the real cost is spent and the rest released (succeeded), or all of it
// released (failed). A completion without a reservation settles nothing.
func settlement(c Completion, s *events.CompletionSucceeded) []events.Data {
	r := c.Reservation
	if r == nil {
		return nil
	}
	if s != nil {
		return []events.Data{events.QuotaSettled{
			CompletionID: c.ID, AccountID: c.AccountID, KeyID: c.KeyID,
			ReservedNanoUSD: r.CostNanoUSD, CostNanoUSD: s.CostNanoUSD,
			ReservedTokens: r.Tokens, Tokens: s.Usage.TotalTokens, Day: r.Day, Month: r.Month,
		}}
	}
	return []events.Data{events.QuotaReleased{
		CompletionID: c.ID, AccountID: c.AccountID, KeyID: c.KeyID,
		ReservedNanoUSD: r.CostNanoUSD, ReservedTokens: r.Tokens, Reason: events.ReleaseFailed, Day: r.Day, Month: r.Month,
	}}
}
