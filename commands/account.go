package commands

import (
	"context"
	"errors"

	"github.com/tollgate/tollgate/account"
	"github.com/tollgate/tollgate/domainerr"
	"github.com/tollgate/tollgate/events"
)

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

// APIKey returns a key, or ErrNotFound.
func (s *Service) APIKey(ctx context.Context, keyID string) (account.APIKey, error) {
	return get(ctx, s, account.APIKeyStream(keyID), "key "+keyID, account.FoldAPIKey)
}

// IssueAPIKey issues a key.
func (s *Service) IssueAPIKey(ctx context.Context, md events.Metadata, cmd account.IssueAPIKey) (account.APIKey, error) {
	a, err := s.Account(ctx, cmd.AccountID)
	if err != nil && !errors.Is(err, domainerr.ErrNotFound) {
		return account.APIKey{}, err
	}
	md.AccountID = cmd.AccountID
	k, _, err := update(ctx, s, account.APIKeyStream(cmd.KeyID), md, account.FoldAPIKey, once, 0, func(k account.APIKey) ([]events.Data, error) {
		return account.DecideIssueAPIKey(a, k, cmd)
	})
	return k, err
}

// RevokeAPIKey revokes a key.
func (s *Service) RevokeAPIKey(ctx context.Context, md events.Metadata, keyID string) (account.APIKey, error) {
	k, _, err := update(ctx, s, account.APIKeyStream(keyID), md, account.FoldAPIKey, once, 0, account.DecideRevokeAPIKey)
	return k, err
}
