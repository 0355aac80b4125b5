package commands

import (
	"context"

	"github.com/tollgate/tollgate/account"
	"github.com/tollgate/tollgate/events"
)

// Commands on an account-… stream.

// Account returns an account, or ErrNotFound.
func (s *Service) Account(ctx context.Context, accountID string) (account.Account, error) {
	return get(ctx, s, account.AccountStream(accountID), "account "+accountID, account.FoldAccount)
}

// CreateAccount opens an account.
func (s *Service) CreateAccount(ctx context.Context, md events.Metadata, cmd account.CreateAccount) (account.Account, error) {
	md.AccountID = cmd.AccountID
	a, _, err := update(ctx, s, account.AccountStream(cmd.AccountID), md, account.FoldAccount, once, 0, func(a account.Account) ([]events.Data, error) {
		return account.DecideCreateAccount(a, cmd, s.planExists)
	})
	return a, err
}

// updateAccount loads an account, decides and appends; the events may
// recur on the stream (see atVersion).
func (s *Service) updateAccount(ctx context.Context, md events.Metadata, accountID string, decide func(account.Account) ([]events.Data, error)) (account.Account, error) {
	a, _, err := update(ctx, s, account.AccountStream(accountID), md, account.FoldAccount, atVersion, 0, decide)
	return a, err
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
