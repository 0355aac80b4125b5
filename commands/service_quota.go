package commands

import (
	"context"

	"github.com/tollgate/tollgate/events"
)

// updateAccount loads an account, decides and appends; the events may
// recur on the stream (see atVersion).
func (s *Service) updateAccount(ctx context.Context, md events.Metadata, accountID string, decide func(Account) ([]events.Data, error)) (Account, error) {
	a, _, err := update(ctx, s, AccountStream(accountID), md, FoldAccount, atVersion, 0, decide)
	return a, err
}

// updateAPIKey loads a key, decides and appends; the events may recur on
// the stream (see atVersion).
func (s *Service) updateAPIKey(ctx context.Context, md events.Metadata, keyID string, decide func(APIKey) ([]events.Data, error)) (APIKey, error) {
	k, _, err := update(ctx, s, APIKeyStream(keyID), md, FoldAPIKey, atVersion, 0, decide)
	return k, err
}

// ChangePlan moves an account to another plan.
func (s *Service) ChangePlan(ctx context.Context, md events.Metadata, accountID string, cmd ChangePlan) (Account, error) {
	return s.updateAccount(ctx, md, accountID, func(a Account) ([]events.Data, error) {
		return DecideChangePlan(a, cmd, s.planExists)
	})
}

// ChangeAccountLimits sets an account's limit overrides.
func (s *Service) ChangeAccountLimits(ctx context.Context, md events.Metadata, accountID string, l events.LimitOverrides) (Account, error) {
	return s.updateAccount(ctx, md, accountID, func(a Account) ([]events.Data, error) {
		return DecideChangeAccountLimits(a, l)
	})
}

// ChangeAPIKeyLimits sets a key's own limits.
func (s *Service) ChangeAPIKeyLimits(ctx context.Context, md events.Metadata, keyID string, l events.LimitOverrides) (APIKey, error) {
	return s.updateAPIKey(ctx, md, keyID, func(k APIKey) ([]events.Data, error) {
		return DecideChangeAPIKeyLimits(k, l)
	})
}

// SuspendAPIKey suspends a key on an operator's word.
func (s *Service) SuspendAPIKey(ctx context.Context, md events.Metadata, keyID string) (APIKey, error) {
	return s.updateAPIKey(ctx, md, keyID, DecideSuspendAPIKey)
}

// UnsuspendAPIKey lifts a key's suspension.
func (s *Service) UnsuspendAPIKey(ctx context.Context, md events.Metadata, keyID string) (APIKey, error) {
	return s.updateAPIKey(ctx, md, keyID, DecideUnsuspendAPIKey)
}

// GuardAPIKey runs the runaway guard on a key's spend figures, suspending
// it when they passed the ceiling.
func (s *Service) GuardAPIKey(ctx context.Context, md events.Metadata, keyID string, g RunawayGuard) (APIKey, error) {
	return s.updateAPIKey(ctx, md, keyID, func(k APIKey) ([]events.Data, error) {
		return DecideRunawayGuard(k, g)
	})
}
