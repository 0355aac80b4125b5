package commands

import (
	"context"

	"github.com/tollgate/tollgate/account"
	"github.com/tollgate/tollgate/events"
)

// updateAccount loads an account, decides and appends; the events may
// recur on the stream (see atVersion).
func (s *Service) updateAccount(ctx context.Context, md events.Metadata, accountID string, decide func(account.Account) ([]events.Data, error)) (account.Account, error) {
	a, _, err := update(ctx, s, account.AccountStream(accountID), md, account.FoldAccount, atVersion, 0, decide)
	return a, err
}

// updateAPIKey loads a key, decides and appends; the events may recur on
// the stream (see atVersion).
func (s *Service) updateAPIKey(ctx context.Context, md events.Metadata, keyID string, decide func(account.APIKey) ([]events.Data, error)) (account.APIKey, error) {
	k, _, err := update(ctx, s, account.APIKeyStream(keyID), md, account.FoldAPIKey, atVersion, 0, decide)
	return k, err
}

// ChangePlan moves an account to another plan.
func (s *Service) ChangePlan(ctx context.Context, md events.Metadata, accountID string, cmd account.ChangePlan) (account.Account, error) {
	return s.updateAccount(ctx, md, accountID, func(a account.Account) ([]events.Data, error) {
		return account.DecideChangePlan(a, cmd, s.planExists)
	})
}

// ChangeAccountLimits sets an account's limit overrides.
func (s *Service) ChangeAccountLimits(ctx context.Context, md events.Metadata, accountID string, l events.LimitOverrides) (account.Account, error) {
	return s.updateAccount(ctx, md, accountID, func(a account.Account) ([]events.Data, error) {
		return account.DecideChangeAccountLimits(a, l)
	})
}

// ChangeAPIKeyLimits sets a key's own limits.
func (s *Service) ChangeAPIKeyLimits(ctx context.Context, md events.Metadata, keyID string, l events.LimitOverrides) (account.APIKey, error) {
	return s.updateAPIKey(ctx, md, keyID, func(k account.APIKey) ([]events.Data, error) {
		return account.DecideChangeAPIKeyLimits(k, l)
	})
}

// SuspendAPIKey suspends a key on an operator's word.
func (s *Service) SuspendAPIKey(ctx context.Context, md events.Metadata, keyID string) (account.APIKey, error) {
	return s.updateAPIKey(ctx, md, keyID, account.DecideSuspendAPIKey)
}

// UnsuspendAPIKey lifts a key's suspension.
func (s *Service) UnsuspendAPIKey(ctx context.Context, md events.Metadata, keyID string) (account.APIKey, error) {
	return s.updateAPIKey(ctx, md, keyID, account.DecideUnsuspendAPIKey)
}

// GuardAPIKey runs the runaway guard on a key's spend figures, suspending
// it when they passed the ceiling.
func (s *Service) GuardAPIKey(ctx context.Context, md events.Metadata, keyID string, g account.RunawayGuard) (account.APIKey, error) {
	return s.updateAPIKey(ctx, md, keyID, func(k account.APIKey) ([]events.Data, error) {
		return account.DecideRunawayGuard(k, g)
	})
}
